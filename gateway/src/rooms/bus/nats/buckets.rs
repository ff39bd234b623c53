//! The JetStream key-value buckets the bus keeps open (presence, read positions): each declared
//! once, directly, and kept in its slot until a failed write forgets it.

use super::*;

impl Inner {
    /// The bucket `bucket`, opened once and kept in `slot`. Its stream is declared directly,
    /// with the layout async-nats' KV creation uses: that call first reads the account info in
    /// the NATS >= 2.10 format, and this way older servers work too. `shape` gives what differs
    /// between buckets (description, storage, max age); `what` names the bucket in errors.
    pub(super) async fn kv_store(
        &self,
        slot: &tokio::sync::Mutex<Option<kv::Store>>,
        bucket: String,
        what: &str,
        shape: stream::Config,
    ) -> Result<kv::Store, BusError> {
        let mut slot = slot.lock().await;
        if let Some(store) = &*slot {
            return Ok(store.clone());
        }
        if !self.connected() {
            return Err(self.down());
        }
        let config = stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: self.replicas,
            ..shape
        };
        streams::create_or_update(&self.js, config)
            .await
            .map_err(|e| self.fail(&format!("create {what} bucket"), e))?;
        let store = self
            .js
            .get_key_value(&bucket)
            .await
            .map_err(|e| self.fail(&format!("open {what} bucket"), e))?;
        *slot = Some(store.clone());
        Ok(store)
    }
}
