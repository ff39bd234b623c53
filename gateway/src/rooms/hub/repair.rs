//! A room's feed lagged (this pod fell behind): repair its members from history like a
//! resume, and tell each member what history no longer holds (`lost`) before anything later
//! (docs/protocol.md, "Delivery guarantees").

use std::borrow::Cow;
use std::sync::{Arc, Weak};

use super::{Encoded, GapFit, LocalRoom, Pending, Slot, backlog_budget, deliver};
use crate::rooms::bus::feed::Lag;
use crate::rooms::bus::{Bus, BusError, Position, Replayed, RoomKey, RoomMessage, Sink};
use crate::rooms::outbox::{Item, LostNotice};
use crate::rooms::protocol;

/// What the pod could not deliver of a room and history could not repair: the stored messages
/// `first..=last` of `epoch` (`last` 0: none) and `ephemeral` ones.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Lost {
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) epoch: String,
    pub(super) ephemeral: u64,
}

/// Tell a member what it missed of `lost` that it has not been given or told yet; it then
/// continues after it. Raw members cannot be told in-band: their writer closes them (4009).
pub(super) fn tell_lost(slot: &mut Slot, room: &str, lost: &Lost) {
    let floor = if slot.epoch == lost.epoch {
        slot.last_seq
    } else {
        0
    };
    let from = lost.first.max(floor.saturating_add(1));
    let stored = (lost.last != 0 && from <= lost.last).then_some(from);
    if stored.is_none() && lost.ephemeral == 0 {
        return;
    }
    let at = |seq| Position {
        seq,
        epoch: lost.epoch.clone(),
    };
    let (from, to) = match stored {
        Some(from) => {
            slot.epoch.clone_from(&lost.epoch);
            slot.last_seq = lost.last;
            (Some(at(from)), Some(at(lost.last)))
        }
        None => (None, None),
    };
    let json = protocol::lost(room, from.as_ref().zip(to.as_ref()), lost.ephemeral);
    let (seq, epoch) = to.map_or((0, String::new()), |p| (p.seq, p.epoch));
    if slot.outbox.push(Item::Lost(Box::new(LostNotice {
        room: room.to_string(),
        seq,
        epoch,
        json,
    }))) {
        crate::metrics::metrics().room_lost.inc();
    }
}

/// What to do about a lag: the `lost` to tell (possibly nothing), then the messages to fan
/// out. `gap`: the complete replay after `lag.after`, if history had it. Otherwise `retained`:
/// what history still holds of the room in the lag's epoch (a suffix of what was published:
/// both buses drop the oldest first), so everything dropped before its oldest message is lost
/// and the rest of the lag is repaired.
pub(super) fn plan(
    lag: &Lag,
    gap: Option<Vec<RoomMessage>>,
    retained: Option<Vec<RoomMessage>>,
) -> (Lost, Vec<RoomMessage>) {
    let lost = |last: u64| Lost {
        first: if last == 0 { 0 } else { lag.first },
        last,
        epoch: lag.epoch.clone(),
        ephemeral: lag.ephemeral,
    };
    if let Some(gap) = gap {
        // Only the lag's own range, as below: later messages are still queued behind it.
        let gap = gap.into_iter().filter(|m| m.seq <= lag.last).collect();
        return (lost(0), gap);
    }
    let Some(retained) = retained else {
        return (lost(lag.last), Vec::new());
    };
    let oldest = retained.first().map_or(u64::MAX, |m| m.seq);
    let last_lost = if oldest <= lag.first {
        0
    } else {
        lag.last.min(oldest - 1)
    };
    // Only the lag's own range: what history holds after it is also in the queue (or in a
    // later lag), and delivering it now would make the queued messages before it look like
    // duplicates.
    let repair = retained
        .into_iter()
        .filter(|m| m.seq > lag.after.seq && m.seq <= lag.last)
        .collect();
    (lost(last_lost), repair)
}

/// What a repair keeps of a history read: the oldest message read (where history starts now)
/// and the lag's own range; the read stops past the range. A repair holds the messages the pod
/// missed, not the room's history.
struct LagRange<'a> {
    lag: &'a Lag,
    msgs: Vec<RoomMessage>,
}

impl Sink for LagRange<'_> {
    fn take(&mut self, msg: Cow<'_, RoomMessage>) -> bool {
        let past = msg.seq > self.lag.last;
        if self.msgs.is_empty() || (msg.seq > self.lag.after.seq && !past) {
            self.msgs.push(msg.into_owned());
        }
        !past
    }
    fn reset(&mut self) {
        self.msgs.clear();
    }
}

/// The room's feed lagged: repair every member from history (a resume from where the feed
/// stopped, de-duplicated per member); what history no longer holds is told to each member
/// (`lost`) before the repaired messages. Either way before any later message of the feed,
/// which the room's drain task takes only after this.
pub(super) async fn repair(bus: &Arc<dyn Bus>, weak: &Weak<LocalRoom>, key: &RoomKey, lag: Lag) {
    let unreadable = |e: BusError| {
        tracing::warn!(namespace = %key.namespace, room = %key.room, error = %e, "cannot read history to repair a room queue overflow; members are told what they missed");
    };
    let (mut gap, mut retained) = (None, None);
    if lag.stored == 0 {
        gap = Some(Vec::new());
    } else {
        let mut range = LagRange {
            lag: &lag,
            msgs: Vec::new(),
        };
        match bus.replay_into(key, &lag.after, &mut range).await {
            Ok(Replayed::Gap) => gap = Some(range.msgs),
            Ok(Replayed::Lost) => {
                range.reset();
                match bus.retained_into(key, &mut range).await {
                    Ok(now) if now.epoch == lag.epoch => retained = Some(range.msgs),
                    Ok(_) => {} // another epoch now: nothing of the lag's is left
                    Err(e) => unreadable(e),
                }
            }
            Err(e) => unreadable(e),
        }
    }
    let (lost, repaired) = plan(&lag, gap, retained);
    let Some(room) = weak.upgrade() else { return };
    let told = lost.last != 0 || lost.ephemeral != 0;
    let mut repaired: Vec<Encoded> = repaired.into_iter().map(Encoded::new).collect();
    let mut cut = false;
    {
        let mut members = room.members.lock().unwrap_or_else(|p| p.into_inner());
        for (conn, slot) in members.iter_mut() {
            match &mut slot.syncing {
                Some(buf) => {
                    if told {
                        buf.push(Pending::Lost(lost.clone()));
                    }
                    buf.extend(repaired.iter().map(|e| Pending::Message(e.msg.clone())));
                }
                None => {
                    if told {
                        tell_lost(slot, &key.room, &lost);
                    }
                    cut |= repair_member(slot, conn, &key.room, &mut repaired);
                }
            }
        }
    }
    tracing::debug!(namespace = %key.namespace, room = %key.room, stored = lag.stored, ephemeral = lag.ephemeral, lost_to = lost.last, "room queue overflow handled");
    crate::metrics::metrics()
        .room_repairs
        .with_label_values(&[if told || cut { "lost" } else { "repaired" }])
        .inc();
}

/// Queue the repaired messages `msgs` (oldest first, encoded once for every member) that a
/// member does not have yet. A member whose join took its whole gap ([`GapFit::Whole`]:
/// long-polling, whose answers page through what the queue took) takes the whole repair.
/// Others take all of it when it fits their queue, less an eighth of it for live messages,
/// each message counted as their join counts it; otherwise the newest part that fits, after a
/// `lost` of the rest, as a resume whose gap outgrows the queue gets ([`super::gap::Window`]). Queued
/// whole, a repair larger than a member's queue would close it as a slow consumer (4008), and
/// every member of a big room would then resume at once. Returns whether this member was cut.
fn repair_member(slot: &mut Slot, conn: &str, room: &str, msgs: &mut [Encoded]) -> bool {
    let from = match GapFit::unpack(slot.fit) {
        GapFit::Whole => 0,
        GapFit::Fit { extra } => newest_that_fit(slot, conn, msgs, extra),
    };
    let (cut, kept) = msgs.split_at_mut(from);
    if let (Some(first), Some(last)) = (cut.first(), cut.last()) {
        let lost = Lost {
            first: first.msg.seq,
            last: last.msg.seq,
            epoch: last.msg.epoch.clone(),
            ephemeral: 0,
        };
        tell_lost(slot, room, &lost);
    }
    for enc in kept {
        deliver(slot, conn, enc);
    }
    from > 0
}

/// Where the newest part of `msgs` that fits the member's queue starts (`msgs.len()`: none
/// fits; messages it already has cost nothing).
fn newest_that_fit(slot: &Slot, conn: &str, msgs: &mut [Encoded], extra: u64) -> usize {
    let budget = backlog_budget(&slot.outbox);
    let needed = |m: &RoomMessage| m.epoch != slot.epoch || m.seq > slot.last_seq;
    let (mut from, mut used) = (msgs.len(), 0);
    while let Some(enc) = from.checked_sub(1).map(|i| &mut msgs[i]) {
        if needed(&enc.msg) {
            let cost = enc
                .item(slot.encoding, conn)
                .map_or(0, |i| i.cost() + extra);
            if used + cost > budget {
                break;
            }
            used += cost;
        }
        from -= 1;
    }
    from
}
