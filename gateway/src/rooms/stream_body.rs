//! The response body of an SSE stream. The stream's task encodes events into chunks and hands
//! them over here without ever waiting on the client; every chunk stays charged to the
//! connection's [`Outbox`] bound (`rooms.maxQueueBytes`) until the HTTP layer has taken it and
//! asked for the next one. A chunk that does not fit makes the stream a slow consumer, exactly
//! as an outbox item that does not fit does: the task ends the stream (see `rooms::sse`).
//!
//! What the HTTP layer holds beyond that is its own write buffer, bounded by the listener's
//! `limits.maxHeaderBytes` (hyper's `max_buf_size`), plus the one chunk it took last.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

use super::outbox::Outbox;

/// Why a chunk was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Over the connection's bound: end the stream as a slow consumer.
    SlowConsumer,
    /// The client went away (the HTTP layer dropped the body).
    Gone,
}

#[derive(Default)]
struct State {
    chunks: VecDeque<Bytes>,
    /// Bytes of `chunks` (charged to the outbox).
    queued: u64,
    /// No more chunks: end the body once `chunks` is empty.
    finished: bool,
}

struct Shared {
    outbox: Arc<Outbox>,
    state: Mutex<State>,
    /// The HTTP layer's task, waiting for a chunk.
    waker: AtomicWaker,
    dropped: AtomicBool,
    gone: Notify,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A body and the handle its task feeds it through.
pub fn channel(outbox: Arc<Outbox>) -> (Sender, StreamBody) {
    let shared = Arc::new(Shared {
        outbox,
        state: Mutex::default(),
        waker: AtomicWaker::new(),
        dropped: AtomicBool::new(false),
        gone: Notify::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        StreamBody { shared, handed: 0 },
    )
}

/// The task's side. Dropping it ends the body after what is queued.
pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    /// Queue a chunk, charged to the bound; never waits.
    pub fn send(&self, chunk: Bytes) -> Result<(), SendError> {
        if self.is_gone() {
            return Err(SendError::Gone);
        }
        let n = chunk.len() as u64;
        {
            let mut st = self.shared.state();
            if !self.shared.outbox.hold(n) {
                return Err(SendError::SlowConsumer);
            }
            st.queued += n;
            st.chunks.push_back(chunk);
        }
        self.shared.waker.wake();
        Ok(())
    }

    /// End the body once what is queued has been taken.
    pub fn finish(&self) {
        self.shared.state().finished = true;
        self.shared.waker.wake();
    }

    /// Drop what is queued (releasing its charge) and end the body at once.
    pub fn discard(&self) {
        let released = {
            let mut st = self.shared.state();
            st.chunks.clear();
            st.finished = true;
            std::mem::take(&mut st.queued)
        };
        self.shared.outbox.release(released);
        self.shared.waker.wake();
    }

    /// Whether the HTTP layer dropped the body (the client went away, or the response ended).
    pub fn is_gone(&self) -> bool {
        self.shared.dropped.load(Ordering::Acquire)
    }

    /// Resolves once the body is dropped.
    pub async fn gone(&self) {
        loop {
            let notified = self.shared.gone.notified();
            if self.is_gone() {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The response body (`hyper::body::Body`).
pub struct StreamBody {
    shared: Arc<Shared>,
    /// Bytes of the chunk the HTTP layer took last, charged until it asks for the next.
    handed: u64,
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if this.handed > 0 {
            this.shared.outbox.release(std::mem::take(&mut this.handed));
        }
        this.shared.waker.register(cx.waker());
        let mut st = this.shared.state();
        if let Some(chunk) = st.chunks.pop_front() {
            let n = chunk.len() as u64;
            st.queued -= n;
            this.handed = n;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if st.finished {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        let queued = {
            let mut st = self.shared.state();
            st.chunks.clear();
            std::mem::take(&mut st.queued)
        };
        self.shared.outbox.release(queued + self.handed);
        self.shared.dropped.store(true, Ordering::Release);
        self.shared.gone.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn chunks_count_against_the_bound_until_the_next_one_is_asked_for() {
        let outbox = Outbox::new(100);
        let (tx, mut body) = channel(outbox.clone());
        tx.send(Bytes::from(vec![b'a'; 60]))
            .expect("fits an empty queue");
        assert_eq!(outbox.queued_bytes(), 60);
        assert_eq!(
            tx.send(Bytes::from(vec![b'b'; 60])),
            Err(SendError::SlowConsumer)
        );
        assert!(outbox.is_overflowed());
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data").len(), 60);
        assert_eq!(outbox.queued_bytes(), 60, "taken, but still charged");
        tx.finish();
        assert!(body.frame().await.is_none(), "finished");
        assert_eq!(
            outbox.queued_bytes(),
            0,
            "released when the next is asked for"
        );
    }

    #[tokio::test]
    async fn a_dropped_body_releases_everything_and_reports_the_client_gone() {
        let outbox = Outbox::new(1000);
        let (tx, body) = channel(outbox.clone());
        tx.send(Bytes::from_static(b"one")).expect("fits");
        tx.send(Bytes::from_static(b"two")).expect("fits");
        drop(body);
        tx.gone().await;
        assert_eq!(outbox.queued_bytes(), 0);
        assert_eq!(tx.send(Bytes::from_static(b"x")), Err(SendError::Gone));
    }

    #[tokio::test]
    async fn discarding_ends_the_body_without_what_was_queued() {
        let outbox = Outbox::new(1000);
        let (tx, mut body) = channel(outbox.clone());
        tx.send(Bytes::from_static(b"unsent")).expect("fits");
        tx.discard();
        assert_eq!(outbox.queued_bytes(), 0);
        assert!(body.frame().await.is_none());
    }
}
