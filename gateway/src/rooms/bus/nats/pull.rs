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
/// What the server counts in a delivered message besides its payload (subject, reply subject,
/// headers): room for it in a pull's byte bound.
const PULL_OVERHEAD: usize = 64 << 10;
/// Most bytes one pull asks for: room for a message of the default `max_payload` (1 MiB). A
/// message larger than that (a server with a larger `max_payload`) is fetched by a pull of its
/// own, sized for the largest message the server takes, that has the whole budget to itself.
const PULL_BYTES: usize = (1 << 20) + PULL_OVERHEAD;
/// How long a pull may go without bringing anything before the read fails. Pulls do not wait
/// for new messages (`no_wait`, and no `expires`: with one, newer servers hold a pull that
/// finds nothing until it expires instead of answering "No Messages" at once).
const PULL_SILENCE: Duration = Duration::from_secs(4);
/// After this long without an answer a pull asks the consumer whether it has anything left
/// (nats-server 2.9 never answers a `no_wait` pull queued on a pending count that messages
/// removed before delivery left too high).
const PULL_SETTLE: Duration = Duration::from_secs(1);
/// Bytes (in KiB) of pulls one pod has in flight at once, over all its history reads: eight
/// pulls of [`PULL_BYTES`], or one pull for a larger message.
pub(super) const PULL_BUDGET_KIB: u32 = 8 * (PULL_BYTES / 1024) as u32;
/// Reads past their first pull one pod advances at once. Each such read keeps its place from
/// its second pull to its last, so under more load than the pod can read in time the first of
/// them finish one after another instead of all advancing in turns and all missing their
/// bounds; reads of one pull (most joins, presence listings, read marks) never wait for them.
pub(super) const LONG_READS: usize = 4;

/// How a pull ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// At its message or byte bound: the consumer may hold more.
    Full,
    /// The server had nothing more for it when it ended.
    Drained,
    /// The consumer says it has nothing left and delivered nothing this read has not taken.
    Settled,
    /// The read's `take` said it has enough.
    Stopped,
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
        // A `no_wait` pull with nothing (more) to bring: "No Messages"; nats-server 2.9 ends one
        // that brought some with "Request Timeout". Other 408s ("Requests Pending", "Interest
        // Expired") bring nothing and say nothing about what is left: failures.
        Some(StatusCode::NOT_FOUND) if says("No Messages") => Reply::End(Ended::Drained),
        Some(StatusCode::TIMEOUT) if says("Request Timeout") => Reply::End(Ended::Drained),
        // The next message would pass the byte bound; newer servers also end a pull that met
        // its message bound with bytes to spare with "Batch Completed".
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
    /// The consumer's pending count after the last message (its ack subject says; 0 while
    /// `got` is).
    pending: u64,
    /// Bytes of the bound not yet used. The server counts each message's subject, reply
    /// subject, headers and payload (nats-server's `sz`; the client's `Message::length`), and a
    /// pull whose messages meet its bound exactly ends with the last of them, saying nothing.
    left: usize,
}

impl Pulled {
    fn new(max_bytes: usize) -> Self {
        Pulled {
            got: 0,
            pending: 0,
            left: max_bytes,
        }
    }

    /// Count a message of `length` bytes; `Some(Full)` if the pull ends with it.
    fn message(&mut self, length: usize, pending: u64) -> Option<Ended> {
        self.got += 1;
        self.pending = pending;
        self.left = self.left.saturating_sub(length);
        (self.got == PULL_MESSAGES || self.left == 0).then_some(Ended::Full)
    }

    /// Whether the read is complete after this pull ended `ended`. A pull that drained the
    /// consumer ends the read only if its last message agrees (or it brought none): the read
    /// never ends on a pull merely shorter than asked for.
    fn read_complete(&self, ended: Ended) -> bool {
        match ended {
            Ended::Full => false,
            Ended::Drained => self.pending == 0,
            Ended::Settled | Ended::Stopped => true,
        }
    }
}

impl Inner {
    /// The byte bound of a pull that brings a message larger than [`PULL_BYTES`]: room for the
    /// largest message the server takes.
    fn largest_pull(&self) -> usize {
        self.client.server_info().max_payload + PULL_OVERHEAD
    }

    /// A turn to have pulls of up to `bytes` in flight (at most the whole budget).
    async fn turn(&self, bytes: usize) -> Result<tokio::sync::SemaphorePermit<'_>, BusError> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(PULL_BUDGET_KIB);
        self.pulls
            .acquire_many(kib)
            .await
            .map_err(|e| BusError::Other(format!("history pull: {e}")))
    }

    /// Whether the consumer has nothing left to deliver and has delivered nothing past
    /// `taken` (the last delivery this read took): then nothing of the read is in flight.
    async fn settled(
        &self,
        consumer: &mut consumer::PullConsumer,
        taken: u64,
    ) -> Result<bool, BusError> {
        let info = consumer
            .info()
            .await
            .map_err(|e| self.fail("read consumer info", e))?;
        Ok(info.num_pending == 0 && info.delivered.consumer_sequence == taken)
    }

    /// Hand every message a fresh ephemeral pull consumer with `cfg` has to `take`, in order,
    /// as it is pulled (at most one pull is held), until the consumer has none left or `take`
    /// says stop. Each pull takes its own turn (first come first served): a read of a few
    /// messages waits for pulls in flight, never for whole reads of long histories (with a turn
    /// per read, a resume of two messages waited 8.8 s behind 16 resumes of a 20 MB room). A
    /// read that needs more than one pull also takes a place among [`LONG_READS`].
    pub(super) async fn read_each<I: Clone + Send + Sync + 'static>(
        &self,
        stream: &stream::Stream<I>,
        cfg: consumer::pull::Config,
        mut take: impl FnMut(jetstream::Message) -> bool + Send,
    ) -> Result<(), BusError> {
        let mut consumer: consumer::PullConsumer = stream
            .create_consumer(cfg)
            .await
            .map_err(|e| self.fail("create read consumer", e))?;
        let name = consumer.cached_info().name.clone();
        let result = async {
            // The consumer's sequence of the last delivery taken: deliveries are numbered from
            // 1 without gaps (no acks, no redeliveries), so a gap is a loss, reported as one.
            let mut taken = 0;
            let mut max_bytes = PULL_BYTES;
            let mut long = None;
            loop {
                if taken > 0 && long.is_none() {
                    long = Some(
                        self.long_reads
                            .acquire()
                            .await
                            .map_err(|e| BusError::Other(format!("history read: {e}")))?,
                    );
                }
                let turn = self.turn(max_bytes).await?;
                let pulled = self
                    .pull(&mut consumer, max_bytes, &mut taken, &mut take)
                    .await;
                drop(turn);
                let (pulled, ended) = pulled?;
                let oversized = std::mem::replace(&mut max_bytes, PULL_BYTES) != PULL_BYTES;
                if pulled.read_complete(ended) {
                    return Ok(());
                }
                // Drained, but the last message said more were pending: on nats-server 2.9 the
                // count can be too high (messages removed before delivery), and a pull queued
                // on it would get no answer. The consumer's own count settles it.
                if ended == Ended::Drained && self.settled(&mut consumer, taken).await? {
                    return Ok(());
                }
                if pulled.got == 0 {
                    // The next message is larger than a pull's bound.
                    let largest = self.largest_pull();
                    if oversized || largest <= PULL_BYTES {
                        return Err(BusError::Other(format!(
                            "reading {name}: a stored message is larger than the server's max_payload"
                        )));
                    }
                    max_bytes = largest;
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

    /// One pull of at most `max_bytes`: hand what it brings to `take`, `taken` following the
    /// deliveries. Returns what it brought and how it ended.
    async fn pull(
        &self,
        consumer: &mut consumer::PullConsumer,
        max_bytes: usize,
        taken: &mut u64,
        take: &mut (impl FnMut(jetstream::Message) -> bool + Send),
    ) -> Result<(Pulled, Ended), BusError> {
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
        let mut silent = Duration::ZERO;
        loop {
            let message = match tokio::time::timeout(PULL_SETTLE, replies.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => return Err(self.fail("pull", "subscription ended")),
                Err(_) if self.settled(consumer, *taken).await? => {
                    return Ok((pulled, Ended::Settled));
                }
                Err(_) if silent + PULL_SETTLE < PULL_SILENCE => {
                    silent += PULL_SETTLE;
                    continue;
                }
                Err(_) => return Err(self.fail("pull", "no answer")),
            };
            silent = Duration::ZERO;
            match reply(message.status, message.description.as_deref()) {
                Reply::Message => {}
                Reply::Ignore => continue,
                Reply::End(ended) => return Ok((pulled, ended)),
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
            let (delivery, pending) = match message.info() {
                Ok(info) => (info.consumer_sequence, info.pending),
                Err(e) => return Err(self.fail("pull", format!("delivery without info: {e}"))),
            };
            if delivery != *taken + 1 {
                return Err(BusError::Other(format!(
                    "pull: delivery {delivery} after {taken}: deliveries were lost"
                )));
            }
            *taken = delivery;
            let ended = pulled.message(message.message.length, pending);
            if !take(message) {
                return Ok((pulled, Ended::Stopped));
            }
            if let Some(ended) = ended {
                return Ok((pulled, ended));
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
        // 404 and 408 that say nothing of what is left (several pulls on one consumer).
        for other in ["Requests Pending", "Interest Expired"] {
            assert_eq!(reply(Some(StatusCode::TIMEOUT), d(other)), Reply::Fail);
        }
        assert_eq!(reply(Some(StatusCode::NOT_FOUND), None), Reply::Fail);
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

    fn pulled(got: usize, pending: u64) -> Pulled {
        Pulled {
            got,
            pending,
            left: 1,
        }
    }

    #[test]
    fn a_read_is_complete_only_when_the_server_and_the_last_message_agree_nothing_is_left() {
        assert!(pulled(0, 0).read_complete(Ended::Drained));
        assert!(pulled(3, 0).read_complete(Ended::Drained));
        // Drained, but the last message said more were pending: pull again.
        assert!(!pulled(3, 2).read_complete(Ended::Drained));
        // Full (message or byte bound): pull again, whatever the pending count says.
        assert!(!pulled(256, 0).read_complete(Ended::Full));
        assert!(!pulled(0, 0).read_complete(Ended::Full));
        // The consumer says nothing is left and nothing is in flight.
        assert!(pulled(3, 2).read_complete(Ended::Settled));
        // `take` has enough, whatever is left.
        assert!(pulled(3, 2).read_complete(Ended::Stopped));
    }

    #[test]
    fn a_pull_whose_messages_meet_its_byte_bound_exactly_ends_with_the_last_of_them() {
        // The server says nothing after such a pull: waiting for it to would stall the read.
        let mut pull = Pulled::new(1_000);
        assert_eq!(pull.message(400, 5), None);
        assert_eq!(pull.message(599, 4), None);
        assert_eq!(pull.message(1, 3), Some(Ended::Full));
        assert_eq!((pull.got, pull.pending, pull.left), (3, 3, 0));
        // And at its message bound, whatever bytes are left.
        let mut pull = Pulled::new(usize::MAX);
        let ends: Vec<_> = (0..PULL_MESSAGES).map(|_| pull.message(10, 0)).collect();
        assert!(ends[..PULL_MESSAGES - 1].iter().all(Option::is_none));
        assert_eq!(ends[PULL_MESSAGES - 1], Some(Ended::Full));
    }
}
