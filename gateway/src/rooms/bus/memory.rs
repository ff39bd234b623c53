//! The embedded bus: one process, rooms fanned out in memory, history in a bounded ring per
//! room. Positions are contiguous per room; the epoch is fixed for the life of the process
//! (a restart loses history, so clients resuming across it get `recovered: false`, then what
//! the new process retains).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::feed::{FeedSender, ROOM_QUEUE, room_queue};
use super::{
    Bus, BusError, Member, Position, PresenceEvent, Publish, Replay, Retention, RoomKey,
    RoomMessage, Subscription,
};

#[derive(Default)]
struct Room {
    seq: u64,
    history: VecDeque<RoomMessage>,
    subscribers: Vec<FeedSender>,
    presence_subscribers: Vec<mpsc::Sender<PresenceEvent>>,
    members: HashMap<String, Member>,
}

/// The in-process bus.
pub struct MemoryBus {
    epoch: String,
    rooms: Mutex<HashMap<RoomKey, Room>>,
    retention: Mutex<HashMap<String, Retention>>,
    /// Live queue depth of each subscription.
    queue: usize,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::with_queue(room_queue())
    }

    /// A bus whose subscriptions queue at most `queue` messages (tests overflow them).
    pub fn with_queue(queue: usize) -> Self {
        Self {
            epoch: format!("mem-{:x}", rand::random::<u64>()),
            rooms: Mutex::default(),
            retention: Mutex::default(),
            queue,
        }
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomKey, Room>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn retention_of(&self, namespace: &str) -> Option<Retention> {
        self.retention
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(namespace)
            .cloned()
    }

    fn trim(history: &mut VecDeque<RoomMessage>, r: &Retention, now: u64) {
        while history.len() > r.max_messages as usize {
            history.pop_front();
        }
        let oldest = now.saturating_sub(r.max_age.as_millis() as u64);
        while history.front().is_some_and(|m| m.ts_ms < oldest) {
            history.pop_front();
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn configure(
        &self,
        namespace: &str,
        retention: Option<Retention>,
    ) -> Result<(), BusError> {
        let mut map = self.retention.lock().unwrap_or_else(|p| p.into_inner());
        match retention {
            Some(r) => map.insert(namespace.to_string(), r),
            None => map.remove(namespace),
        };
        Ok(())
    }

    async fn publish(&self, p: Publish) -> Result<Option<Position>, BusError> {
        let retention = (!p.ephemeral)
            .then(|| self.retention_of(&p.key.namespace))
            .flatten();
        let now = now_ms();
        let mut rooms = self.rooms();
        if retention.is_none() && !rooms.contains_key(&p.key) {
            // Nobody is listening and nothing is stored: do not create a room (memory would
            // otherwise grow with every room name ever published to).
            return Ok(None);
        }
        let room = rooms.entry(p.key.clone()).or_default();
        let seq = if p.ephemeral {
            0
        } else {
            room.seq += 1;
            room.seq
        };
        let msg = RoomMessage {
            key: p.key,
            seq,
            epoch: self.epoch.clone(),
            ts_ms: now,
            from: p.from,
            data: p.data,
            ephemeral: p.ephemeral,
            origin_conn: p.origin_conn,
        };
        if let Some(r) = &retention {
            room.history.push_back(msg.clone());
            Self::trim(&mut room.history, r, now);
        }
        // Sent under the lock so every subscriber sees positions in order. A hub queue that
        // is full (the hub's fan-out never awaits, so this means the process is starved) makes
        // the feed lag: the hub repairs its members from history or tells them (`feed`).
        room.subscribers.retain(|s| !s.is_closed());
        for s in &room.subscribers {
            let _ = s.send(msg.clone());
        }
        if retention.is_none() && room.subscribers.is_empty() && room.members.is_empty() {
            rooms.remove(&msg.key);
        }
        Ok((!p_is_ephemeral(seq)).then(|| Position {
            seq,
            epoch: self.epoch.clone(),
        }))
    }

    async fn subscribe(&self, key: &RoomKey) -> Result<Subscription, BusError> {
        let (ptx, prx) = mpsc::channel(ROOM_QUEUE);
        let mut rooms = self.rooms();
        let room = rooms.entry(key.clone()).or_default();
        let (tx, rx) = FeedSender::with_capacity(
            self.queue,
            Position {
                seq: room.seq,
                epoch: self.epoch.clone(),
            },
        );
        room.subscribers.push(tx);
        room.presence_subscribers.push(ptx);
        Ok(Subscription {
            messages: rx,
            presence: prx,
            guard: Box::new(()),
        })
    }

    async fn replay(&self, key: &RoomKey, since: &Position) -> Result<Replay, BusError> {
        if since.epoch != self.epoch {
            return Ok(Replay::Lost);
        }
        let retention = self.retention_of(&key.namespace);
        let mut rooms = self.rooms();
        let Some(room) = rooms.get_mut(key) else {
            return Ok(if since.seq == 0 {
                Replay::Gap(vec![])
            } else {
                Replay::Lost
            });
        };
        if since.seq > room.seq {
            return Ok(Replay::Lost);
        }
        if let Some(r) = &retention {
            Self::trim(&mut room.history, r, now_ms());
        }
        if since.seq == room.seq {
            return Ok(Replay::Gap(vec![]));
        }
        // The gap is complete only if the first missing message is still retained.
        match room.history.front() {
            Some(first) if first.seq <= since.seq + 1 => Ok(Replay::Gap(
                room.history
                    .iter()
                    .filter(|m| m.seq > since.seq)
                    .cloned()
                    .collect(),
            )),
            _ => Ok(Replay::Lost),
        }
    }

    async fn position(&self, key: &RoomKey) -> Result<Position, BusError> {
        let seq = self.rooms().get(key).map_or(0, |r| r.seq);
        Ok(Position {
            seq,
            epoch: self.epoch.clone(),
        })
    }

    async fn retained(&self, key: &RoomKey) -> Result<(Vec<RoomMessage>, Position), BusError> {
        let retention = self.retention_of(&key.namespace);
        let mut rooms = self.rooms();
        let Some(room) = rooms.get_mut(key) else {
            return Ok((
                Vec::new(),
                Position {
                    seq: 0,
                    epoch: self.epoch.clone(),
                },
            ));
        };
        if let Some(r) = &retention {
            Self::trim(&mut room.history, r, now_ms());
        }
        let position = Position {
            seq: room.seq,
            epoch: self.epoch.clone(),
        };
        Ok((room.history.iter().cloned().collect(), position))
    }

    async fn presence_set(
        &self,
        key: &RoomKey,
        member: &Member,
        present: bool,
    ) -> Result<(), BusError> {
        let mut rooms = self.rooms();
        let room = rooms.entry(key.clone()).or_default();
        let changed = if present {
            room.members
                .insert(member.conn.clone(), member.clone())
                .is_none()
        } else {
            room.members.remove(&member.conn).is_some()
        };
        if changed {
            room.presence_subscribers.retain(|s| !s.is_closed());
            for s in &room.presence_subscribers {
                let _ = s.try_send(PresenceEvent {
                    key: key.clone(),
                    joined: present,
                    member: member.clone(),
                });
            }
        }
        Ok(())
    }

    async fn presence_list(&self, key: &RoomKey) -> Result<Vec<Member>, BusError> {
        let mut list: Vec<Member> = self
            .rooms()
            .get(key)
            .map(|r| r.members.values().cloned().collect())
            .unwrap_or_default();
        list.sort_by(|a, b| a.conn.cmp(&b.conn));
        Ok(list)
    }

    /// Nothing outside this process can listen to the in-process bus, so it refuses rather
    /// than pretend to deliver. Validation keeps `rooms.notifyNats` off without `bus.nats`;
    /// this is reached only when a reload added `bus.nats` to a gateway that started without
    /// it (the bus is chosen at start).
    async fn notify(&self, _namespace: &str, _event: Bytes) -> Result<(), BusError> {
        Err(BusError::Other(
            "notifications over NATS need the NATS bus; this gateway started with the in-process bus (restart it to use bus.nats)".into(),
        ))
    }

    fn healthy(&self) -> bool {
        true
    }
}

fn p_is_ephemeral(seq: u64) -> bool {
    seq == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::bus::Payload;
    use std::time::Duration;

    fn key(room: &str) -> RoomKey {
        RoomKey {
            namespace: "ns".into(),
            room: room.into(),
        }
    }

    fn publish(room: &str, n: i64) -> Publish {
        Publish {
            key: key(room),
            from: None,
            data: Payload::Json(n.into()),
            ephemeral: false,
            origin_conn: None,
        }
    }

    async fn bus_with_history(max: u32) -> MemoryBus {
        let bus = MemoryBus::new();
        bus.configure(
            "ns",
            Some(Retention {
                max_messages: max,
                max_age: Duration::from_secs(60),
            }),
        )
        .await
        .unwrap();
        bus
    }

    #[tokio::test]
    async fn subscribers_get_messages_in_position_order() {
        let bus = bus_with_history(10).await;
        let mut sub = bus.subscribe(&key("a")).await.unwrap();
        for n in 0..5 {
            bus.publish(publish("a", n)).await.unwrap();
        }
        for want in 1..=5 {
            assert_eq!(
                sub.messages
                    .recv()
                    .await
                    .unwrap()
                    .into_message()
                    .unwrap()
                    .seq,
                want
            );
        }
    }

    #[tokio::test]
    async fn replay_returns_exactly_the_gap() {
        let bus = bus_with_history(10).await;
        let mut last = None;
        for n in 0..6 {
            last = bus.publish(publish("a", n)).await.unwrap();
        }
        let epoch = last.unwrap().epoch;
        match bus
            .replay(&key("a"), &Position { seq: 3, epoch })
            .await
            .unwrap()
        {
            Replay::Gap(msgs) => assert_eq!(
                msgs.iter().map(|m| m.seq).collect::<Vec<_>>(),
                vec![4, 5, 6]
            ),
            Replay::Lost => panic!("gap is retained"),
        }
    }

    #[tokio::test]
    async fn replay_past_retention_or_from_another_epoch_is_lost() {
        let bus = bus_with_history(3).await;
        let mut epoch = String::new();
        for n in 0..10 {
            epoch = bus.publish(publish("a", n)).await.unwrap().unwrap().epoch;
        }
        assert_eq!(
            bus.replay(
                &key("a"),
                &Position {
                    seq: 2,
                    epoch: epoch.clone()
                }
            )
            .await
            .unwrap(),
            Replay::Lost
        );
        assert!(
            matches!(bus.replay(&key("a"), &Position { seq: 7, epoch }).await.unwrap(), Replay::Gap(m) if m.len() == 3)
        );
        assert_eq!(
            bus.replay(
                &key("a"),
                &Position {
                    seq: 7,
                    epoch: "other".into()
                }
            )
            .await
            .unwrap(),
            Replay::Lost
        );
    }

    #[tokio::test]
    async fn retained_is_what_history_still_holds_of_the_current_epoch() {
        let bus = bus_with_history(3).await;
        assert_eq!(
            bus.retained(&key("a")).await.unwrap(),
            (
                vec![],
                Position {
                    seq: 0,
                    epoch: bus.epoch.clone()
                }
            )
        );
        for n in 0..5 {
            bus.publish(publish("a", n)).await.unwrap();
        }
        let (msgs, position) = bus.retained(&key("a")).await.unwrap();
        assert_eq!(
            msgs.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(
            position,
            Position {
                seq: 5,
                epoch: bus.epoch.clone()
            }
        );
    }

    #[tokio::test]
    async fn ephemeral_messages_are_delivered_but_never_stored() {
        let bus = bus_with_history(10).await;
        let mut sub = bus.subscribe(&key("a")).await.unwrap();
        let mut p = publish("a", 1);
        p.ephemeral = true;
        assert_eq!(bus.publish(p).await.unwrap(), None);
        assert!(
            sub.messages
                .recv()
                .await
                .unwrap()
                .into_message()
                .unwrap()
                .ephemeral
        );
        let pos = bus.position(&key("a")).await.unwrap();
        assert_eq!(pos.seq, 0);
        assert_eq!(
            bus.replay(&key("a"), &pos).await.unwrap(),
            Replay::Gap(vec![])
        );
    }

    #[tokio::test]
    async fn notifications_are_refused_because_nothing_outside_the_process_can_listen() {
        let bus = MemoryBus::new();
        let err = bus
            .notify("ns", Bytes::from_static(b"{}"))
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::Other(_)), "{err}");
    }

    #[tokio::test]
    async fn presence_lists_members_and_announces_changes() {
        let bus = MemoryBus::new();
        let mut sub = bus.subscribe(&key("a")).await.unwrap();
        let m = Member {
            conn: "c1".into(),
            user: Some("alice".into()),
            info: serde_json::Value::Null,
        };
        bus.presence_set(&key("a"), &m, true).await.unwrap();
        bus.presence_set(&key("a"), &m, true).await.unwrap();
        assert_eq!(bus.presence_list(&key("a")).await.unwrap(), vec![m.clone()]);
        assert!(sub.presence.recv().await.unwrap().joined);
        bus.presence_set(&key("a"), &m, false).await.unwrap();
        assert!(!sub.presence.recv().await.unwrap().joined);
        assert!(bus.presence_list(&key("a")).await.unwrap().is_empty());
    }
}
