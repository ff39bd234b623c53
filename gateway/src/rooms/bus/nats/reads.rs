//! Read positions on the NATS bus: the JetStream key-value bucket `<PREFIX>_reads`, one key per
//! namespace, user and room (`<ns>.<user>.<room>`, escaped), so every pod sees the same read
//! position and the publish API lists a user's rooms with one filtered read.

use std::collections::BTreeMap;

use super::*;
use crate::rooms::bus::MAX_READS_PER_USER;

/// Attempts at a compare-and-set update before giving up (concurrent reads of one user).
const CAS_ATTEMPTS: usize = 8;

/// Most of a user's read positions one mark forgets ([`MAX_READS_PER_USER`]): a user far over
/// the bound is brought under it over several marks, each within a store operation's time.
const MAX_PURGES_PER_MARK: usize = 32;

/// One stored read position (the room is kept in the value: keys are escaped).
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    room: String,
    seq: u64,
    epoch: String,
}

/// The [`ReadStore`](super::super::ReadStore) of a NATS bus.
pub(super) struct NatsReads(pub(super) Arc<Inner>);

impl Inner {
    fn reads_bucket(&self) -> String {
        format!("{}_reads", self.stream_prefix)
    }

    async fn reads_store(&self) -> Result<kv::Store, BusError> {
        let shape = stream::Config {
            description: Some("switchboard read positions: <ns>.<user>.<room> -> position".into()),
            storage: StorageType::File,
            ..Default::default()
        };
        self.kv_store(&self.reads, self.reads_bucket(), "reads", shape)
            .await
    }

    /// The subjects of every read position of `user` in `namespace`.
    fn user_reads_filter(store: &kv::Store, namespace: &str, user: &str) -> String {
        format!(
            "{}{}.{}.*",
            store.prefix,
            kv_escape(namespace),
            kv_escape(user)
        )
    }

    fn read_key(key: &RoomKey, user: &str) -> String {
        format!(
            "{}.{}.{}",
            kv_escape(&key.namespace),
            kv_escape(user),
            kv_escape(&key.room)
        )
    }

    async fn read_entry(
        &self,
        store: &kv::Store,
        kv_key: &str,
    ) -> Result<Option<(Position, u64)>, BusError> {
        let entry = store
            .entry(kv_key)
            .await
            .map_err(|e| self.fail("read position", e))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| {
                let s: Stored = serde_json::from_slice(&e.value).ok()?;
                Some((
                    Position {
                        seq: s.seq,
                        epoch: s.epoch,
                    },
                    e.revision,
                ))
            }))
    }

    async fn read_mark(
        &self,
        key: &RoomKey,
        user: &str,
        pos: &Position,
    ) -> Result<Position, BusError> {
        check_key(key)?;
        let store = self.reads_store().await?;
        let kv_key = Self::read_key(key, user);
        let value = Bytes::from(
            serde_json::to_vec(&Stored {
                room: key.room.clone(),
                seq: pos.seq,
                epoch: pos.epoch.clone(),
            })
            .map_err(|e| BusError::Other(format!("read position: {e}")))?,
        );
        for _ in 0..CAS_ATTEMPTS {
            let current = self.read_entry(&store, &kv_key).await?;
            if let Some((old, _)) = &current
                && !super::super::read_advances(Some(old), pos)
            {
                return Ok(old.clone());
            }
            let written = match current {
                Some((_, revision)) => store
                    .update(&kv_key, value.clone(), revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => {
                    self.read_make_room(&store, key, user).await?;
                    store
                        .create(&kv_key, value.clone())
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            };
            match written {
                Ok(()) => return Ok(pos.clone()),
                // Someone else wrote first: read again and compare.
                Err(e) => tracing::debug!(error = %e, "read position changed meanwhile; retrying"),
            }
        }
        Err(BusError::Other(
            "read position: too many concurrent updates".into(),
        ))
    }

    /// Before `user`'s first position in a room: at [`MAX_READS_PER_USER`] positions in the
    /// namespace, forget their least recently marked one (its key purged from the bucket).
    /// Pods marking for one user at the same moment can overshoot by the few writes in flight.
    async fn read_make_room(
        &self,
        store: &kv::Store,
        key: &RoomKey,
        user: &str,
    ) -> Result<(), BusError> {
        let filter = Self::user_reads_filter(store, &key.namespace, user);
        let mut keys = store
            .stream
            .info_with_subjects(&filter)
            .await
            .map_err(|e| self.fail("read positions of user", e))?;
        let mut n = 0;
        while let Some(subject) = keys.next().await {
            subject.map_err(|e| self.fail("read positions of user", e))?;
            n += 1;
        }
        if n < MAX_READS_PER_USER {
            return Ok(());
        }
        // Least recently marked first: the keys whose last write has the lowest stream
        // sequence (deleted keys' markers count, and go, like positions). A user over the
        // bound (positions made before it existed) is brought down a bounded step per mark.
        let over = (n + 1 - MAX_READS_PER_USER).min(MAX_PURGES_PER_MARK);
        let mut oldest: BTreeMap<u64, String> = BTreeMap::new();
        self.read_each(
            &store.stream,
            Self::read_config(filter, DeliverPolicy::LastPerSubject),
            |m| {
                if let Ok(info) = m.info() {
                    keep_smallest(
                        &mut oldest,
                        over,
                        info.stream_sequence,
                        m.subject.to_string(),
                    );
                }
                true
            },
        )
        .await?;
        for subject in oldest.into_values() {
            store
                .stream
                .purge()
                .filter(subject)
                .await
                .map_err(|e| self.fail("forget a read position", e))?;
            crate::metrics::metrics().room_reads_forgotten.inc();
        }
        Ok(())
    }

    async fn read_get(&self, key: &RoomKey, user: &str) -> Result<Option<Position>, BusError> {
        check_key(key)?;
        let store = self.reads_store().await?;
        Ok(self
            .read_entry(&store, &Self::read_key(key, user))
            .await?
            .map(|(p, _)| p))
    }

    async fn read_list(
        &self,
        namespace: &str,
        user: &str,
        max: usize,
    ) -> Result<Vec<(String, Position)>, BusError> {
        check_ns(namespace)?;
        let store = self.reads_store().await?;
        let filter = Self::user_reads_filter(&store, namespace, user);
        // The `max` first rooms by name, kept as the keys are read: a user with very many read
        // positions costs a scan, not their whole list in memory.
        let mut first: BTreeMap<String, Position> = BTreeMap::new();
        self.read_each(
            &store.stream,
            Self::read_config(filter, DeliverPolicy::LastPerSubject),
            |m| {
                let op = m.headers.as_ref().and_then(|h| h.get(KV_OPERATION));
                if op.is_some_and(|v| matches!(v.as_str(), "DEL" | "PURGE")) {
                    return true;
                }
                let Ok(s) = serde_json::from_slice::<Stored>(&m.payload) else {
                    return true;
                };
                let position = Position {
                    seq: s.seq,
                    epoch: s.epoch,
                };
                keep_smallest(&mut first, max, s.room, position);
                true
            },
        )
        .await?;
        Ok(first.into_iter().collect())
    }
}

#[async_trait]
impl super::super::ReadStore for NatsReads {
    async fn mark(&self, key: &RoomKey, user: &str, pos: &Position) -> Result<Position, BusError> {
        let inner = &self.0;
        inner
            .bounded(OP_TIMEOUT, inner.read_mark(key, user, pos))
            .await
    }

    async fn get(&self, key: &RoomKey, user: &str) -> Result<Option<Position>, BusError> {
        let inner = &self.0;
        inner.bounded(OP_TIMEOUT, inner.read_get(key, user)).await
    }

    async fn of_user(
        &self,
        namespace: &str,
        user: &str,
        max: usize,
    ) -> Result<Vec<(String, Position)>, BusError> {
        let inner = &self.0;
        inner
            .bounded(REPLAY_TIMEOUT, inner.read_list(namespace, user, max))
            .await
    }
}

/// Keep `(k, v)` in `map` if it is among the `max` smallest keys offered so far: a bounded
/// selection while a read streams by.
fn keep_smallest<K: Ord, V>(map: &mut BTreeMap<K, V>, max: usize, k: K, v: V) {
    if map.len() >= max && map.last_key_value().is_none_or(|(last, _)| *last <= k) {
        return;
    }
    map.insert(k, v);
    if map.len() > max {
        map.pop_last();
    }
}
