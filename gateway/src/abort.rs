//! Ending one client connection from inside its request handler. The listener wraps every
//! client connection's IO in [`Abortable`] and hands the request a [`ConnAbort`] (a request
//! extension); once aborted, every read and write of that connection fails, so the HTTP layer
//! drops it even while it is blocked writing to a client that stopped reading (a streamed
//! response it could otherwise never finish).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The abort handle of one client connection (cheap to clone).
#[derive(Clone, Default)]
pub struct ConnAbort(Arc<Inner>);

#[derive(Default)]
struct Inner {
    aborted: AtomicBool,
    /// The task driving the connection (one task polls both directions before an upgrade).
    waker: AtomicWaker,
}

impl ConnAbort {
    /// Fail every further read and write of the connection, waking whoever waits on it.
    pub fn abort(&self) {
        self.0.aborted.store(true, Ordering::Release);
        self.0.waker.wake();
    }

    pub fn is_aborted(&self) -> bool {
        self.0.aborted.load(Ordering::Acquire)
    }

    /// Wrap a connection's IO so this handle can end it.
    pub fn wrap<I>(&self, inner: I) -> Abortable<I> {
        Abortable {
            inner,
            abort: self.clone(),
        }
    }

    /// Registered before the check, so an abort in between still wakes the task.
    fn check(&self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.0.waker.register(cx.waker());
        self.is_aborted().then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection ended by the gateway",
            )
        })
    }
}

/// A connection's IO that fails once its [`ConnAbort`] is used.
pub struct Abortable<I> {
    inner: I,
    abort: ConnAbort,
}

impl<I> Abortable<I> {
    /// The IO without the abort check: for a connection no handler can end any more (a
    /// tunnel, after the upgrade).
    pub fn into_inner(self) -> I {
        self.inner
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Abortable<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.abort.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Abortable<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.abort.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.abort.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.abort.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.abort.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn an_aborted_connection_fails_a_write_blocked_on_a_full_socket() {
        let (client, server) = tokio::io::duplex(16);
        let abort = ConnAbort::default();
        let mut io = abort.wrap(server);
        let writer = tokio::spawn(async move { io.write_all(&[0u8; 1024]).await });
        tokio::task::yield_now().await;
        assert!(!writer.is_finished(), "blocked: the peer reads nothing");
        abort.abort();
        let err = writer.await.expect("task").expect_err("the write fails");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        drop(client);
    }

    #[tokio::test]
    async fn an_untouched_handle_changes_nothing() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = ConnAbort::default().wrap(server);
        io.write_all(b"hi").await.expect("write");
        let mut buf = [0u8; 2];
        client.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"hi");
    }
}
