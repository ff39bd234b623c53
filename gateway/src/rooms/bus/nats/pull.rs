//! Reading a JetStream pull consumer in pulls bounded in messages *and* bytes, a few pulls at a
//! time per pod. What a pull brings waits in nats-server's outbound buffer for this connection
//! until the client reads it, and past the server's `max_pending` (64 MiB by default) the server
//! cuts the whole connection off as a slow consumer: every room, publish and presence of the pod
//! with it. Pulled 256 messages at a time with no byte bound, one resume through a room of
//! 700 KB messages did that.

use async_nats::StatusCode;
use async_nats::jetstream::consumer::pull::BatchConfig;

use super::*;

/// Most messages one pull asks for.
const PULL_MESSAGES: usize = 256;
/// Most bytes one pull asks for, unless the server accepts larger messages: a pull must be able
/// to bring any stored message, or the read could not go past it.
const PULL_BYTES: usize = 1 << 20;
/// What the server counts in a delivered message besides its payload (subject, reply subject,
/// headers): room for it in a pull's byte bound.
const PULL_OVERHEAD: usize = 64 << 10;
/// How long a pull may go without bringing anything before the read fails. Pulls do not wait
/// for new messages (`no_wait`, and no `expires`: with one, newer servers hold a pull that
/// finds nothing until it expires instead of answering "No Messages" at once).
const PULL_SILENCE: Duration = Duration::from_secs(5);
/// Pulls one pod has in flight at once, over all its history reads: what the server may have
/// queued for the pod at once is this many byte bounds.
pub(super) const CONCURRENT_PULLS: usize = 8;

/// How a pull ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// At its message or byte bound: the consumer may hold more.
    Full,
    /// The server had nothing more for it when it ended.
    Drained,
}

/// What one reply to a pull is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Message,
    /// A heartbeat or flow-control status.
    Ignore,
    End(Ended),
    Fail,
}

/// What a reply to a pull with `status` and `description` means (ADR-13 statuses).
fn reply(status: Option<StatusCode>, description: Option<&str>) -> Reply {
    let says = |what: &str| description.is_some_and(|d| d.eq_ignore_ascii_case(what));
    match status {
        None | Some(StatusCode::OK) => Reply::Message,
        Some(StatusCode::IDLE_HEARTBEAT) => Reply::Ignore,
        // "No Messages" (a `no_wait` pull with nothing left), "Request Timeout".
        Some(StatusCode::NOT_FOUND) | Some(StatusCode::TIMEOUT) => Reply::End(Ended::Drained),
        // The next message would pass the byte bound; newer servers also end a pull that met
        // its bound exactly with "Batch Completed".
        Some(StatusCode::REQUEST_TERMINATED)
            if says("Message Size Exceeds MaxBytes") || says("Batch Completed") =>
        {
            Reply::End(Ended::Full)
        }
        _ => Reply::Fail,
    }
}

/// One pull as it goes: what it brought and how much of its byte bound is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pulled {
    got: usize,
    /// The consumer's pending count after the last message (its ack subject says).
    pending: Option<u64>,
    /// Bytes of the bound not yet used. The server counts each message's subject, reply
    /// subject, headers and payload (nats-server's `sz`; the client's `Message::length`), and a
    /// pull whose messages meet its bound exactly ends with the last of them, saying nothing.
    left: usize,
}

impl Pulled {
    fn new(max_bytes: usize) -> Self {
        Pulled {
            got: 0,
            pending: None,
            left: max_bytes,
        }
    }

    /// Count a message of `length` bytes; `Some(Full)` if the pull ends with it.
    fn message(&mut self, length: usize, pending: Option<u64>) -> Option<Ended> {
        self.got += 1;
        self.pending = pending;
        self.left = self.left.saturating_sub(length);
        (self.got == PULL_MESSAGES || self.left == 0).then_some(Ended::Full)
    }

    /// Whether the read is complete after this pull ended `ended`. A pull that drained the
    /// consumer ends the read only if its last message agrees (or it brought none): the read
    /// never ends on a pull merely shorter than asked for.
    fn read_complete(&self, ended: Ended) -> bool {
        ended == Ended::Drained && (self.got == 0 || self.pending == Some(0))
    }
}

impl Inner {
    /// The byte bound of one pull: [`PULL_BYTES`], or room for the largest message the server
    /// takes if that is more.
    fn pull_bytes(&self) -> usize {
        PULL_BYTES.max(self.client.server_info().max_payload + PULL_OVERHEAD)
    }

    /// Hand every message a fresh ephemeral pull consumer with `cfg` has to `take`, in order,
    /// as it is pulled (at most one pull is held), until the consumer has none left or `take`
    /// says stop.
    pub(super) async fn read_each<I: Clone + Send + Sync + 'static>(
        &self,
        stream: &stream::Stream<I>,
        cfg: consumer::pull::Config,
        mut take: impl FnMut(jetstream::Message) -> bool + Send,
    ) -> Result<(), BusError> {
        let consumer = stream
            .create_consumer(cfg)
            .await
            .map_err(|e| self.fail("create read consumer", e))?;
        let name = consumer.cached_info().name.clone();
        let result = async {
            loop {
                let max_bytes = self.pull_bytes();
                let (pulled, ended, stopped) = self.pull(&consumer, max_bytes, &mut take).await?;
                if stopped || pulled.read_complete(ended) {
                    return Ok(());
                }
                if pulled.got == 0 {
                    return Err(BusError::Other(format!(
                        "reading {name}: a stored message is larger than a pull's {max_bytes} bytes"
                    )));
                }
            }
        }
        .await;
        // Best effort (the server drops it after READ_CONSUMER_TTL anyway).
        let stream = stream.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(OP_TIMEOUT, stream.delete_consumer(&name)).await;
        });
        result
    }

    /// One pull of at most `max_bytes`: hand what it brings to `take`. Returns what it brought,
    /// how it ended, and whether `take` said stop.
    async fn pull(
        &self,
        consumer: &consumer::PullConsumer,
        max_bytes: usize,
        take: &mut (impl FnMut(jetstream::Message) -> bool + Send),
    ) -> Result<(Pulled, Ended, bool), BusError> {
        let _turn = self
            .pulls
            .acquire()
            .await
            .map_err(|e| BusError::Other(format!("history pull: {e}")))?;
        // A subscription per pull: a late status of one pull can never end the next.
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| self.fail("pull inbox", e))?;
        consumer
            .request_batch(
                BatchConfig {
                    batch: PULL_MESSAGES,
                    max_bytes,
                    no_wait: true,
                    ..Default::default()
                },
                inbox.into(),
            )
            .await
            .map_err(|e| self.fail("pull", e))?;
        let mut pulled = Pulled::new(max_bytes);
        loop {
            let message = match tokio::time::timeout(PULL_SILENCE, replies.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => return Err(self.fail("pull", "subscription ended")),
                Err(_) => return Err(self.fail("pull", "no answer")),
            };
            match reply(message.status, message.description.as_deref()) {
                Reply::Message => {}
                Reply::Ignore => continue,
                Reply::End(ended) => return Ok((pulled, ended, false)),
                Reply::Fail => {
                    return Err(self.fail(
                        "pull",
                        format!(
                            "{} {}",
                            message.status.map_or(0, |s| s.as_u16()),
                            message.description.as_deref().unwrap_or_default()
                        ),
                    ));
                }
            }
            let message = jetstream::Message {
                message,
                context: self.js.clone(),
            };
            let pending = message.info().ok().map(|i| i.pending);
            let ended = pulled.message(message.message.length, pending);
            if !take(message) {
                return Ok((pulled, Ended::Full, true));
            }
            if let Some(ended) = ended {
                return Ok((pulled, ended, false));
            }
        }
    }

    /// [`Inner::read_each`] into a `Vec` (reads bounded by what they read: a room's presence).
    pub(super) async fn read_all<I: Clone + Send + Sync + 'static>(
        &self,
        stream: &stream::Stream<I>,
        cfg: consumer::pull::Config,
    ) -> Result<Vec<jetstream::Message>, BusError> {
        let mut out = Vec::new();
        self.read_each(stream, cfg, |m| {
            out.push(m);
            true
        })
        .await?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_ends_full_at_its_byte_bound_and_drained_only_when_the_server_has_nothing_more() {
        let d = Some;
        assert_eq!(reply(None, None), Reply::Message);
        assert_eq!(
            reply(Some(StatusCode::IDLE_HEARTBEAT), d("Idle Heartbeat")),
            Reply::Ignore
        );
        assert_eq!(
            reply(Some(StatusCode::NOT_FOUND), d("No Messages")),
            Reply::End(Ended::Drained)
        );
        assert_eq!(
            reply(Some(StatusCode::TIMEOUT), d("Request Timeout")),
            Reply::End(Ended::Drained)
        );
        assert_eq!(
            reply(
                Some(StatusCode::REQUEST_TERMINATED),
                d("Message Size Exceeds MaxBytes")
            ),
            Reply::End(Ended::Full)
        );
        assert_eq!(
            reply(Some(StatusCode::REQUEST_TERMINATED), d("Batch Completed")),
            Reply::End(Ended::Full)
        );
        for other in [
            "Consumer Deleted",
            "Exceeded MaxRequestMaxBytes",
            "Leadership Change",
        ] {
            assert_eq!(
                reply(Some(StatusCode::REQUEST_TERMINATED), d(other)),
                Reply::Fail
            );
        }
        assert_eq!(reply(Some(StatusCode::NO_RESPONDERS), None), Reply::Fail);
    }

    fn pulled(got: usize, pending: Option<u64>) -> Pulled {
        Pulled {
            got,
            pending,
            left: 1,
        }
    }

    #[test]
    fn a_read_is_complete_only_when_the_server_and_the_last_message_agree_nothing_is_left() {
        assert!(pulled(0, None).read_complete(Ended::Drained));
        assert!(pulled(3, Some(0)).read_complete(Ended::Drained));
        // Drained, but the last message said more were pending: pull again.
        assert!(!pulled(3, Some(2)).read_complete(Ended::Drained));
        assert!(!pulled(3, None).read_complete(Ended::Drained));
        // Full (message or byte bound): pull again, whatever the pending count says.
        assert!(!pulled(256, Some(0)).read_complete(Ended::Full));
        assert!(!pulled(0, None).read_complete(Ended::Full));
    }

    #[test]
    fn a_pull_whose_messages_meet_its_byte_bound_exactly_ends_with_the_last_of_them() {
        // The server says nothing after such a pull: waiting for it to would stall the read.
        let mut pull = Pulled::new(1_000);
        assert_eq!(pull.message(400, Some(5)), None);
        assert_eq!(pull.message(599, Some(4)), None);
        assert_eq!(pull.message(1, Some(3)), Some(Ended::Full));
        assert_eq!((pull.got, pull.pending, pull.left), (3, Some(3), 0));
        // And at its message bound, whatever bytes are left.
        let mut pull = Pulled::new(usize::MAX);
        let ends: Vec<_> = (0..PULL_MESSAGES).map(|_| pull.message(10, None)).collect();
        assert!(ends[..PULL_MESSAGES - 1].iter().all(Option::is_none));
        assert_eq!(ends[PULL_MESSAGES - 1], Some(Ended::Full));
    }
}
