//! Live delivery of one subscribed room: the pump that moves its NATS traffic (ordered
//! JetStream consumer for stored messages, core subscriptions for ephemeral messages and
//! presence) into the hub's feed, and the guard that stops it.
//!
//! The ordered consumer re-creates itself after a reconnect from the last stream sequence it
//! delivered, on whatever stream then has the name. When NATS came back with empty storage
//! that is a new stream (a new epoch) whose sequences start again at 1: resuming there after
//! the old stream's last sequence would skip every message until the new stream got that far.
//! So a stored message received on a newer connection than the one the stream's epoch was read
//! on is not passed on before the epoch has been read again; if the stream is a new one, live
//! delivery starts over at its first message (the messages of the old stream this pod had not
//! passed on are gone with it).

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
    /// The connection ([`Inner::generation`]) `epoch` was last read on.
    pub(super) read_on: u64,
    /// A message after `last` was received and not passed on: the consumer must be re-created
    /// from `last + 1` (or from 1 on a new stream) before anything more is.
    pub(super) rewind: bool,
    /// Following the stream failed (NATS trouble): when to try again.
    pub(super) retry_at: Option<tokio::time::Instant>,
}

/// Pause before following a stream again after a failed attempt.
const FOLLOW_RETRY: Duration = Duration::from_secs(1);

/// What [`Pump::follow_stream`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Followed {
    /// The consumer reads the current stream: it was kept.
    Kept,
    /// The consumer was re-created (a new stream, or a rewind).
    Recreated,
    /// The stream's epoch could not be read or the consumer not re-created (retried).
    NotYet,
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
    /// Changes once the namespaces' epochs were read again after a (re)connect.
    pub(super) epochs: tokio::sync::watch::Receiver<u64>,
}

pub(super) async fn next_of<S: futures_util::Stream + Unpin>(s: &mut Option<S>) -> Option<S::Item> {
    match s {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`; never ends for `None`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
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
    /// The epochs were read again after a (re)connect, or a failed attempt is due again.
    Follow,
}

impl Pump {
    pub(super) async fn run(mut self) {
        loop {
            let stored = self.stored.is_some();
            let retry_at = self.stored.as_ref().and_then(|f| f.retry_at);
            let incoming = tokio::select! {
                m = next_stored(&mut self.stored) => Incoming::Stored(m),
                m = next_of(&mut self.room_core) => Incoming::Core(m),
                m = self.eph.next() => Incoming::Core(m),
                m = self.presence.next() => Incoming::Presence(m),
                // The sender lives in `inner`, which the pump holds: never closed.
                Ok(()) = self.epochs.changed(), if stored => Incoming::Follow,
                () = sleep_until(retry_at) => Incoming::Follow,
            };
            let open = match incoming {
                Incoming::Stored(Some(Ok(m))) => self.stored_message(&m).await,
                Incoming::Follow => {
                    if self.stored.as_ref().is_some_and(|f| {
                        f.rewind || f.retry_at.is_some() || f.read_on != self.inner.generation()
                    }) {
                        self.follow_stream(false).await;
                    }
                    true
                }
                Incoming::Stored(Some(Err(e))) => {
                    // While NATS is down this repeats per room (missed heartbeats): only the
                    // disconnect itself is worth a warning (logged once by the client).
                    if self.inner.connected() {
                        tracing::warn!(room = %self.key.room, error = %e, "live consumer interrupted; it resumes from the last delivered message");
                        // The stream may have been deleted and recreated meanwhile.
                        self.follow_stream(true).await;
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

    pub(super) async fn stored_message(&mut self, m: &jetstream::Message) -> bool {
        let Some(feed) = self.stored.as_ref() else {
            return true;
        };
        if feed.rewind || feed.read_on != self.inner.generation() {
            // Received on a newer connection than the one the epoch was read on: the stream
            // may be a new one, and this message not the one `seq` meant before.
            if feed
                .retry_at
                .is_some_and(|at| at > tokio::time::Instant::now())
            {
                // Following failed a moment ago and is retried on its timer: not another
                // wait of up to the bound per buffered message (the room's core traffic is
                // not read meanwhile). The re-created consumer delivers this one again.
                if let Some(feed) = self.stored.as_mut() {
                    feed.rewind = true;
                }
                return true;
            }
            match self.follow_stream(false).await {
                Followed::Kept => {}
                // The new consumer delivers it again (if it belongs to the current stream).
                Followed::Recreated => return true,
                Followed::NotYet => {
                    if let Some(feed) = self.stored.as_mut() {
                        feed.rewind = true;
                    }
                    return true;
                }
            }
        }
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

    /// Make the live consumer read the namespace's current stream, with its epoch read on the
    /// current connection (`fresh`: read now, even if it was read on this connection
    /// already). A recreated stream (a new epoch) restarts live delivery at its first message;
    /// a rewind re-creates the consumer after the last message passed on.
    pub(super) async fn follow_stream(&mut self, fresh: bool) -> Followed {
        let inner = self.inner.clone();
        let ns = &self.key.namespace;
        let Some(feed) = self.stored.as_mut() else {
            return Followed::Kept;
        };
        let read = if fresh {
            inner
                .bounded(OP_TIMEOUT, inner.stream_info(ns))
                .await
                .map(|(_, info, read_on)| (epoch_of(&info), read_on))
        } else {
            inner
                .bounded(OP_TIMEOUT, inner.ensure_stream(ns))
                .await
                .map(|(_, epoch, read_on)| (epoch, read_on))
        };
        let (epoch, read_on) = match read {
            Ok(read) => read,
            Err(e) => {
                tracing::debug!(room = %self.key.room, error = %e, "history stream not read; live delivery waits for it");
                feed.retry_at = Some(tokio::time::Instant::now() + FOLLOW_RETRY);
                return Followed::NotYet;
            }
        };
        if epoch != feed.epoch {
            tracing::error!(namespace = %ns, room = %self.key.room, old_epoch = %feed.epoch, epoch = %epoch, last = feed.last, "history stream was recreated (NATS lost it, or it was deleted): live delivery restarts at the new stream's first message; what the old one held after `last` is gone");
            feed.epoch = epoch;
            feed.last = 0;
            feed.rewind = true;
        }
        if !feed.rewind {
            feed.read_on = read_on;
            feed.retry_at = None;
            return Followed::Kept;
        }
        let start = feed.last.saturating_add(1);
        match inner
            .bounded(
                OP_TIMEOUT,
                inner.ordered(&feed.stream, &feed.subject, start),
            )
            .await
        {
            Ok(ordered) => {
                feed.ordered = ordered;
                feed.rewind = false;
                feed.retry_at = None;
                feed.read_on = read_on;
                Followed::Recreated
            }
            Err(e) => {
                tracing::warn!(room = %self.key.room, error = %e, "live consumer not re-created; retrying");
                feed.retry_at = Some(tokio::time::Instant::now() + FOLLOW_RETRY);
                Followed::NotYet
            }
        }
    }
}
