//! Batched delivery (docs/protocol.md, "Batched delivery"): in a room matching a route's
//! `batch.rooms`, the live messages a pod receives within `batch.window` of the first one reach
//! its members as one `batch` event, sent when the window ends or as soon as it holds
//! `batch.maxMessages`. A batch is built once per pod (once per encoding), like a message. Each
//! message keeps its own position; history, resume and gap replays are unchanged (a resumed
//! gap arrives as single messages).

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::authz::{self, Pattern};
use super::bus::{Payload, RoomMessage};
use crate::auth::jwt::Claims;

/// A room's batching, from its route's `batch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCfg {
    pub window: Duration,
    pub max_messages: usize,
    pub group_by: Option<String>,
}

impl From<&switchboard_config::Batch> for BatchCfg {
    fn from(b: &switchboard_config::Batch) -> Self {
        Self {
            window: b.window,
            max_messages: usize::try_from(b.max_messages).unwrap_or(usize::MAX).max(1),
            group_by: b.group_by.clone(),
        }
    }
}

/// Which rooms a member's route batches: the route's `batch.rooms` patterns with the member's
/// claims (a `{sub}` pattern batches the member's own room).
#[derive(Debug, Clone)]
pub struct BatchRule {
    pub patterns: Vec<Pattern>,
    pub claims: Option<Claims>,
    pub cfg: BatchCfg,
}

impl BatchRule {
    /// The batching of `room`, if the route batches it.
    pub fn for_room(&self, room: &str) -> Option<BatchCfg> {
        authz::allowed(&self.patterns, room, self.claims.as_ref()).then(|| self.cfg.clone())
    }
}

/// The batch being collected for one room on this pod.
#[derive(Debug)]
pub struct Batcher {
    cfg: BatchCfg,
    pending: Vec<RoomMessage>,
    /// When the pending batch is due (its first message's arrival plus the window).
    due: Option<Instant>,
}

impl Batcher {
    pub fn new(cfg: BatchCfg) -> Self {
        Self {
            cfg,
            pending: Vec::new(),
            due: None,
        }
    }

    pub fn cfg(&self) -> &BatchCfg {
        &self.cfg
    }

    /// Add a message; returns the batch when this message filled it.
    pub fn push(&mut self, msg: RoomMessage, now: Instant) -> Option<Vec<RoomMessage>> {
        if self.pending.is_empty() {
            self.due = Some(now + self.cfg.window);
        }
        self.pending.push(msg);
        (self.pending.len() >= self.cfg.max_messages).then(|| self.take())
    }

    /// When the pending batch must be sent (`None`: nothing pending).
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The pending batch (possibly empty), now.
    pub fn take(&mut self) -> Vec<RoomMessage> {
        self.due = None;
        std::mem::take(&mut self.pending)
    }
}

/// The `groupBy` value of a message: the top-level field of its JSON object payload, as text
/// (strings as they are, other JSON values in their JSON form). `None` without one.
fn group_key(msg: &RoomMessage, field: &str) -> Option<String> {
    let Payload::Json(Value::Object(obj)) = &msg.data else {
        return None;
    };
    match obj.get(field)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// The groups of a batch: by `group_by` (one group per value, in the order of their first
/// message; messages in order inside each), or all in one group without it.
pub fn groups<'a>(
    msgs: &'a [RoomMessage],
    group_by: Option<&str>,
) -> Vec<(Option<String>, Vec<&'a RoomMessage>)> {
    let mut out: Vec<(Option<String>, Vec<&RoomMessage>)> = Vec::new();
    for m in msgs {
        let key = group_by.and_then(|f| group_key(m, f));
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(m),
            None => out.push((key, vec![m])),
        }
    }
    out
}

#[cfg(test)]
mod hub_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::bus::RoomKey;
    use serde_json::json;

    fn msg(seq: u64, kind: &str) -> RoomMessage {
        RoomMessage {
            key: RoomKey {
                namespace: "ns".into(),
                room: "user:alice".into(),
            },
            seq,
            epoch: "e".into(),
            ts_ms: 0,
            from: None,
            data: Payload::Json(json!({"type": kind, "n": seq})),
            ephemeral: false,
            origin_conn: None,
        }
    }

    fn cfg(max: usize) -> BatchCfg {
        BatchCfg {
            window: Duration::from_secs(1),
            max_messages: max,
            group_by: Some("type".into()),
        }
    }

    #[test]
    fn a_batch_is_due_one_window_after_its_first_message_and_full_at_the_cap() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(3));
        assert_eq!(b.due(), None);
        assert!(b.push(msg(1, "like"), t0).is_none());
        assert!(
            b.push(msg(2, "like"), t0 + Duration::from_millis(500))
                .is_none()
        );
        assert_eq!(b.due(), Some(t0 + Duration::from_secs(1)));
        let full = b.push(msg(3, "like"), t0 + Duration::from_millis(600));
        let seqs: Vec<u64> = full.unwrap().iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(b.due(), None, "a sent batch leaves nothing pending");
        b.push(msg(4, "like"), t0 + Duration::from_secs(2));
        assert_eq!(b.due(), Some(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn groups_follow_the_order_of_their_first_message_and_keep_message_order() {
        let msgs = vec![msg(1, "like"), msg(2, "comment"), msg(3, "like")];
        let g = groups(&msgs, Some("type"));
        let shape: Vec<(Option<&str>, Vec<u64>)> = g
            .iter()
            .map(|(k, ms)| (k.as_deref(), ms.iter().map(|m| m.seq).collect()))
            .collect();
        assert_eq!(
            shape,
            vec![(Some("like"), vec![1, 3]), (Some("comment"), vec![2])]
        );
        let one = groups(&msgs, None);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].0, None);
        assert_eq!(one[0].1.len(), 3);
    }

    #[test]
    fn messages_without_the_field_share_the_group_without_a_key() {
        let mut m = msg(1, "x");
        m.data = Payload::Binary(bytes::Bytes::from_static(b"\x00"));
        let msgs = vec![m, msg(2, "like")];
        let g = groups(&msgs, Some("type"));
        assert_eq!(g[0].0, None);
        assert_eq!(g[1].0.as_deref(), Some("like"));
    }
}
