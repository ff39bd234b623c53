//! When a replay from JetStream is complete: the arithmetic of retained suffixes, positions
//! and the probe that proves a short gap complete (pure functions, tested in `tests.rs`).

use std::borrow::Cow;

use super::*;

/// Whether a replay from `since` (exclusive) holds every message of the room, given what
/// JetStream says *after* the messages were read. The retained messages of one subject are always
/// a suffix of what was published to it (both the per-subject limit and `max_age` drop the oldest
/// first), so:
///
/// 1. if the room's oldest retained message is at, before or right after `since`
///    (`oldest <= since + 1`), nothing after `since` was dropped: complete;
/// 2. otherwise nothing after `since` was dropped if the stream head has not moved past it
///    (`first_seq <= since + 1`: no `max_age`/stream-limit removal after `since`) and the room
///    holds fewer messages than the per-subject limit (a per-subject removal after `since` would
///    have left the room full): complete;
/// 3. otherwise the gap may be incomplete (`Lost`, conservative: the client reloads, it never
///    silently misses messages), unless [`probe_range`] proves it complete.
///
/// `since` beyond the stream's last sequence is not a position of this stream: `Lost`.
pub fn gap_is_complete(
    since: u64,
    oldest_of_room: Option<u64>,
    first_seq: u64,
    last_seq: u64,
    room_count: u64,
    max_per_subject: i64,
) -> bool {
    if since > last_seq {
        return false;
    }
    if oldest_of_room.is_some_and(|o| o <= since.saturating_add(1)) {
        return true;
    }
    let below_limit = max_per_subject <= 0 || room_count < max_per_subject as u64;
    first_seq <= since.saturating_add(1) && below_limit
}

/// Longest run of sequences [`probe_range`] checks one by one.
pub const PROBE_MAX: u64 = 16;

/// When [`gap_is_complete`] says no but the room's oldest retained message is close after
/// `since`: the sequences strictly between them. Only they can have been messages of the room
/// that were dropped (suffix property), so if every one of them still exists (as a message of
/// another room), the gap is complete after all. This turns the common "exactly the per-subject
/// limit behind" case back into a complete gap.
pub fn probe_range(
    since: u64,
    oldest_of_room: Option<u64>,
    last_seq: u64,
) -> Option<std::ops::Range<u64>> {
    let oldest = oldest_of_room?;
    let start = since.checked_add(1)?;
    (since <= last_seq && oldest > start && oldest - start <= PROBE_MAX).then_some(start..oldest)
}

/// Reading a room's history from JetStream: replay from a position, the retained messages,
/// the current position.
impl Inner {
    pub(super) fn read_config(
        filter: String,
        deliver_policy: DeliverPolicy,
    ) -> consumer::pull::Config {
        consumer::pull::Config {
            filter_subject: filter,
            deliver_policy,
            ack_policy: AckPolicy::None,
            inactive_threshold: READ_CONSUMER_TTL,
            memory_storage: true,
            ..Default::default()
        }
    }

    pub(super) async fn replay(
        &self,
        key: &RoomKey,
        since: &Position,
        sink: &mut dyn Sink,
    ) -> Result<Replayed, BusError> {
        check_key(key)?;
        let ns = &key.namespace;
        if self.history(ns).is_none() {
            return Ok(Replayed::Lost); // nothing is stored: resume always reloads
        }
        if !self.connected() {
            return Err(self.down());
        }
        let (stream, cached, _) = self.ensure_stream(ns).await?;
        if since.epoch != cached {
            let (_, info, _) = self.stream_info(ns).await?;
            if epoch_of(&info) != since.epoch {
                return Ok(Replayed::Lost);
            }
        }
        let subject = self.subject("room", key);
        let start = since.seq.saturating_add(1);
        // Decoded as `since`'s epoch, as read: a stream of another epoch by the end makes it
        // `Lost`, whatever the sink took.
        self.read_each(
            &stream,
            Self::read_config(
                subject.clone(),
                DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
            ),
            |m| {
                let Ok(info) = m.info() else { return true };
                if info.stream_sequence <= since.seq {
                    return true;
                }
                match decode(
                    key,
                    &m.payload,
                    info.stream_sequence,
                    &since.epoch,
                    ms_of(&info),
                ) {
                    Some(msg) => sink.take(Cow::Owned(msg)),
                    None => true,
                }
            },
        )
        .await?;
        // Checked after reading, in this order (see `gap_is_complete`).
        let oldest = match stream.get_first_raw_message_by_subject(&subject, 1).await {
            Ok(m) if m.subject.as_str() == subject => Some(m.sequence),
            Ok(_) => None,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => None,
            Err(e) => return Err(self.fail("first message of room", e)),
        };
        let read_on = self.generation();
        let mut details = stream
            .info_with_subjects(&subject)
            .await
            .map_err(|e| self.fail("stream info", e))?;
        let count = match details.next().await {
            Some(Ok((s, n))) if s == subject => n as u64,
            _ => 0,
        };
        let info = &details.info;
        let epoch = epoch_of(info);
        self.set_epoch(ns, &epoch, read_on);
        if epoch != since.epoch {
            return Ok(Replayed::Lost);
        }
        let mut complete = gap_is_complete(
            since.seq,
            oldest,
            info.state.first_sequence,
            info.state.last_sequence,
            count,
            info.config.max_messages_per_subject,
        );
        if let (false, Some(range)) = (
            complete,
            probe_range(since.seq, oldest, info.state.last_sequence),
        ) {
            complete = self.all_present(&stream, range).await?;
        }
        Ok(if complete {
            Replayed::Gap
        } else {
            Replayed::Lost
        })
    }

    /// Whether every sequence in `range` is still stored (in any room).
    pub(super) async fn all_present(
        &self,
        stream: &stream::Stream<()>,
        range: std::ops::Range<u64>,
    ) -> Result<bool, BusError> {
        for seq in range {
            match stream.get_raw_message(seq).await {
                Ok(_) => {}
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(false),
                Err(e) => return Err(self.fail("stream message", e)),
            }
        }
        Ok(true)
    }

    pub(super) async fn retained(
        &self,
        key: &RoomKey,
        sink: &mut dyn Sink,
    ) -> Result<Position, BusError> {
        check_key(key)?;
        let ns = &key.namespace;
        if self.history(ns).is_none() {
            return Ok(Position {
                seq: 0,
                epoch: NO_HISTORY_EPOCH.into(),
            });
        }
        if !self.connected() {
            return Err(self.down());
        }
        // The position is the stream's end *before* reading: a message published after it is
        // either read here or delivered live after it, never skipped.
        let (stream, before, _) = self.stream_info(ns).await?;
        let epoch = epoch_of(&before);
        let position = Position {
            seq: before.state.last_sequence,
            epoch: epoch.clone(),
        };
        self.read_each(
            &stream,
            Self::read_config(self.subject("room", key), DeliverPolicy::All),
            |m| {
                let Ok(info) = m.info() else { return true };
                match decode(key, &m.payload, info.stream_sequence, &epoch, ms_of(&info)) {
                    Some(msg) => sink.take(Cow::Owned(msg)),
                    None => true,
                }
            },
        )
        .await?;
        let (_, after, _) = self.stream_info(ns).await?;
        if epoch_of(&after) != epoch {
            // Recreated while reading: nothing read belongs to the epoch now current.
            sink.reset();
            return Ok(Position {
                seq: after.state.last_sequence,
                epoch: epoch_of(&after),
            });
        }
        Ok(position)
    }

    pub(super) async fn position(&self, key: &RoomKey) -> Result<Position, BusError> {
        check_key(key)?;
        if self.history(&key.namespace).is_none() {
            return Ok(Position {
                seq: 0,
                epoch: NO_HISTORY_EPOCH.into(),
            });
        }
        if !self.connected() {
            return Err(self.down());
        }
        // The stream's last sequence, not the room's last message: no message of the room lies
        // between the two, and a recent position keeps resume exact (rule 2 of
        // `gap_is_complete`) for rooms whose last message is long gone.
        let (_, info, _) = self.stream_info(&key.namespace).await?;
        Ok(Position {
            seq: info.state.last_sequence,
            epoch: epoch_of(&info),
        })
    }
}
