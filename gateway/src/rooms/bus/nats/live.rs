//! Live delivery of one subscribed room: the pump that moves its NATS traffic (ordered
//! JetStream consumer for stored messages, core subscriptions for ephemeral messages and
//! presence) into the hub's feed, and the guard that stops it.

use super::*;

/// Stops a subscription's pump (and with it its NATS subscriptions and consumer) on drop.
pub(super) struct Guard(pub(super) tokio::task::AbortHandle);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) struct StoredFeed {
    pub(super) stream: stream::Stream<()>,
    pub(super) subject: String,
    pub(super) epoch: String,
    pub(super) ordered: consumer::push::Ordered,
    /// Highest sequence delivered (or the start floor): anything at or below is a duplicate.
    /// The library re-creates its consumer from "all" when it had delivered nothing yet.
    pub(super) last: u64,
}

/// Moves one room's NATS traffic into the hub's feed.
pub(super) struct Pump {
    pub(super) inner: Arc<Inner>,
    pub(super) key: RoomKey,
    pub(super) stored: Option<StoredFeed>,
    pub(super) room_core: Option<Subscriber>,
    pub(super) eph: Subscriber,
    pub(super) presence: Subscriber,
    pub(super) tx: FeedSender,
}

pub(super) async fn next_of<S: futures_util::Stream + Unpin>(s: &mut Option<S>) -> Option<S::Item> {
    match s {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

pub(super) async fn next_stored(
    s: &mut Option<StoredFeed>,
) -> Option<Result<jetstream::Message, consumer::push::OrderedError>> {
    match s {
        Some(feed) => feed.ordered.next().await,
        None => std::future::pending().await,
    }
}

// One value per received message, moved once from `select!` to its handler: boxing the large
// variant would add an allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Incoming {
    Stored(Option<Result<jetstream::Message, consumer::push::OrderedError>>),
    Core(Option<async_nats::Message>),
    Presence(Option<async_nats::Message>),
}

impl Pump {
    pub(super) async fn run(mut self) {
        loop {
            let incoming = tokio::select! {
                m = next_stored(&mut self.stored) => Incoming::Stored(m),
                m = next_of(&mut self.room_core) => Incoming::Core(m),
                m = self.eph.next() => Incoming::Core(m),
                m = self.presence.next() => Incoming::Presence(m),
            };
            let open = match incoming {
                Incoming::Stored(Some(Ok(m))) => self.stored_message(&m),
                Incoming::Stored(Some(Err(e))) => {
                    // While NATS is down this repeats per room (missed heartbeats): only the
                    // disconnect itself is worth a warning (logged once by the client).
                    if self.inner.connected() {
                        tracing::warn!(room = %self.key.room, error = %e, "live consumer interrupted; it resumes from the last delivered message");
                        self.check_epoch().await;
                    } else {
                        tracing::debug!(room = %self.key.room, error = %e, "live consumer waits for NATS");
                    }
                    true
                }
                Incoming::Core(Some(m)) => {
                    // No position; the epoch is the room's (as the memory bus does).
                    let epoch = self
                        .stored
                        .as_ref()
                        .map_or(NO_HISTORY_EPOCH, |f| f.epoch.as_str());
                    match decode(&self.key, &m.payload, 0, epoch, now_ms()) {
                        Some(msg) => self.send(msg),
                        None => true,
                    }
                }
                Incoming::Presence(Some(m)) => self.presence_event(&m),
                // The client is closed for good (the bus was dropped).
                Incoming::Stored(None) | Incoming::Core(None) | Incoming::Presence(None) => false,
            };
            if !open {
                return;
            }
        }
    }

    pub(super) fn stored_message(&mut self, m: &jetstream::Message) -> bool {
        let Some(feed) = self.stored.as_mut() else {
            return true;
        };
        let Ok(info) = m.info() else { return true };
        let seq = info.stream_sequence;
        if seq <= feed.last {
            return true; // re-delivered after a consumer re-creation
        }
        feed.last = seq;
        let ts = ms_of(&info);
        match decode(&self.key, &m.payload, seq, &feed.epoch, ts) {
            Some(msg) => self.send(msg),
            None => true,
        }
    }

    /// Never waits: NATS must keep being read. A full queue makes the feed lag (the hub
    /// repairs its members from history or tells them, see `feed`).
    pub(super) fn send(&mut self, msg: RoomMessage) -> bool {
        self.tx.send(msg).is_ok()
    }

    pub(super) fn presence_event(&mut self, m: &async_nats::Message) -> bool {
        let Ok(ev) = serde_json::from_slice::<PresenceWire>(&m.payload) else {
            tracing::warn!(room = %self.key.room, "dropping a malformed presence event");
            return true;
        };
        let ev = PresenceEvent {
            key: self.key.clone(),
            joined: ev.joined,
            member: ev.member,
        };
        self.tx.send_presence(ev).is_ok()
    }

    /// After the live consumer lost its server-side state: if the stream itself was recreated
    /// (new epoch), start over on the new stream (sequences restart there).
    pub(super) async fn check_epoch(&mut self) {
        let Some(feed) = self.stored.as_mut() else {
            return;
        };
        let Ok(Ok(info)) = tokio::time::timeout(OP_TIMEOUT, feed.stream.get_info()).await else {
            return;
        };
        let epoch = epoch_of(&info);
        if epoch == feed.epoch {
            return;
        }
        tracing::error!(namespace = %self.key.namespace, room = %self.key.room, "history stream was recreated; live delivery restarts on the new stream");
        self.inner.set_epoch(&self.key.namespace, &epoch);
        match self.inner.ordered(&feed.stream, &feed.subject, 1).await {
            Ok(ordered) => {
                feed.ordered = ordered;
                feed.epoch = epoch;
                feed.last = 0;
            }
            Err(e) => {
                tracing::warn!(room = %self.key.room, error = %e, "live consumer not re-created; retried on the next interruption")
            }
        }
    }
}
