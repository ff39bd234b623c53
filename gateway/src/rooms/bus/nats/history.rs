//! When a replay from JetStream is complete: the arithmetic of retained suffixes, positions
//! and the probe that proves a short gap complete (pure functions, tested in `tests.rs`).

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
