//! Presence on the NATS bus: the JetStream key-value bucket of members (one key per room and
//! connection), and the join/leave events published beside it.

use super::*;

impl Inner {
    pub(super) async fn presence_store(&self) -> Result<kv::Store, BusError> {
        let shape = stream::Config {
            description: Some("switchboard room presence: <ns>.<room>.<conn> -> member".into()),
            max_age: self.presence_ttl,
            // Refreshed every ttl/3 by its pod: losing it with a NATS restart costs one refresh.
            storage: StorageType::Memory,
            ..Default::default()
        };
        self.kv_store(&self.presence, self.presence_bucket(), "presence", shape)
            .await
    }

    /// After a failed KV write: look the bucket up again next time (it may have been lost).
    pub(super) async fn forget_presence_store(&self) {
        *self.presence.lock().await = None;
    }

    pub(super) fn presence_key(key: &RoomKey, conn: &str) -> String {
        format!(
            "{}.{}.{}",
            kv_escape(&key.namespace),
            kv_escape(&key.room),
            kv_escape(conn)
        )
    }

    pub(super) async fn presence_set(
        &self,
        key: &RoomKey,
        member: &Member,
        present: bool,
    ) -> Result<(), BusError> {
        check_key(key)?;
        if !self.connected() {
            return Err(self.down());
        }
        let store = self.presence_store().await?;
        let kv_key = Self::presence_key(key, &member.conn);
        let id = (key.clone(), member.conn.clone());
        let changed = if present {
            let value = Bytes::from(
                serde_json::to_vec(member).map_err(|e| BusError::Other(format!("member: {e}")))?,
            );
            if let Err(e) = store.put(&kv_key, value).await {
                self.forget_presence_store().await;
                return Err(self.fail("presence put", e));
            }
            lock(&self.announced).insert(id)
        } else {
            let was = lock(&self.announced).remove(&id);
            if let Err(e) = store.purge(&kv_key).await {
                self.forget_presence_store().await;
                return Err(self.fail("presence purge", e));
            }
            was
        };
        if changed {
            let event = PresenceWire {
                joined: present,
                member: member.clone(),
            };
            let payload = Bytes::from(serde_json::to_vec(&event).unwrap_or_default());
            self.client
                .publish(self.subject("presence", key), payload)
                .await
                .map_err(|e| self.fail("presence event", e))?;
        }
        Ok(())
    }

    pub(super) async fn presence_list(&self, key: &RoomKey) -> Result<Vec<Member>, BusError> {
        check_key(key)?;
        if !self.connected() {
            return Err(self.down());
        }
        let store = self.presence_store().await?;
        let filter = format!(
            "{}{}.{}.*",
            store.prefix,
            kv_escape(&key.namespace),
            kv_escape(&key.room)
        );
        let raw = match self
            .read_all(
                &store.stream,
                Self::read_config(filter, DeliverPolicy::LastPerSubject),
            )
            .await
        {
            Ok(raw) => raw,
            Err(e) => {
                self.forget_presence_store().await;
                return Err(e);
            }
        };
        let mut members: Vec<Member> = raw
            .iter()
            .filter(|m| {
                let op = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(KV_OPERATION))
                    .map(|v| v.as_str().to_string());
                !matches!(op.as_deref(), Some("DEL" | "PURGE"))
            })
            .filter_map(|m| serde_json::from_slice::<Member>(&m.payload).ok())
            .collect();
        members.sort_by(|a, b| a.conn.cmp(&b.conn));
        members.dedup_by(|a, b| a.conn == b.conn);
        Ok(members)
    }
}
