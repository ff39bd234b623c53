//! Where proxied tunnels run: one event loop per edge worker (`event_loop.rs`), each on a
//! thread of its own. After the upgrade a tunnel over plain TCP (one task that
//! owns both sockets, `relay.rs`) is handed to one of them, its two sockets taken out of the
//! edge runtime's event loop and registered with that thread's, and it stays there: every
//! readiness event of the tunnel is handled by the thread that received it, as an nginx worker
//! handles its connections. On the edge runtime (tokio's work-stealing pool) a busy tunnel's
//! task moves between the workers and a worker that finds work wakes another one to steal
//! some; with 200 busy tunnels that cost about a tenth of the proxy's round trips per second
//! (docs/benchmarks.md, "Proxy CPU per round trip").
//!
//! Only the tunnel moves: the handshake (TLS, HTTP, the pipeline, the app's 101) runs on the
//! edge runtime, and so do rooms connections, which hand messages to the bus's tasks there. A
//! TLS client's tunnel stays on the edge runtime (its TLS state cannot be taken apart and
//! moved).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::event_loop::{self, LoopHandle};

/// The tunnel threads: tunnels are handed to them in turn.
pub struct TunnelThreads {
    loops: Box<[LoopHandle]>,
    next: AtomicUsize,
}

impl std::fmt::Debug for TunnelThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelThreads")
            .field("threads", &self.loops.len())
            .finish()
    }
}

impl TunnelThreads {
    /// Start `n` (at least one) threads named `switchboard-tunnel-<i>`, each running its event
    /// loop until [`Self::stop`] (or until this is dropped).
    pub fn start(n: usize) -> io::Result<Self> {
        let loops = (0..n.max(1))
            .map(|i| event_loop::start(format!("switchboard-tunnel-{i}")))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            loops: loops.into_boxed_slice(),
            next: AtomicUsize::new(0),
        })
    }

    /// End every tunnel still running on the threads, at once (the exit, after the drain).
    pub fn stop(&self) {
        for l in &self.loops {
            l.stop();
        }
    }

    /// Run `task` on the next thread. Sockets it makes there with
    /// [`event_loop::LoopStream::from_std`] are served by that thread's event loop, and its
    /// timers are that loop's ([`event_loop::sleep_until`]).
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.loops.len();
        self.loops[i].spawn(task);
    }
}

/// A connection's IO with the bytes hyper read past its handshake (a frame the peer sent right
/// behind its request or its 101), which are read first.
pub struct Resumed<T> {
    read_first: Bytes,
    io: T,
}

impl<T> Resumed<T> {
    pub fn new(read_first: Bytes, io: T) -> Self {
        // hyper's bytes are a slice of its read buffer (8 KiB or more), even when empty: an
        // empty one is let go at once, or it would pin that buffer for the tunnel's life.
        let read_first = if read_first.is_empty() {
            Bytes::new()
        } else {
            read_first
        };
        Self { read_first, io }
    }

    /// The same connection over `f(io)` (a socket moved between event loops).
    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Resumed<U>, E> {
        Ok(Resumed {
            read_first: self.read_first,
            io: f(self.io)?,
        })
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Resumed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read_first.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.read_first.len().min(buf.remaining());
        buf.put_slice(&self.read_first[..n]);
        self.read_first.advance(n);
        if self.read_first.is_empty() {
            // Give the allocation back now rather than with the tunnel.
            self.read_first = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Resumed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_resumed_connection_reads_what_hyper_kept_before_the_socket_and_writes_through() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut io = Resumed::new(Bytes::from_static(b"kept"), a);
        b.write_all(b" then the socket").await.unwrap();
        let mut got = [0u8; 2];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ke", "a short read takes part of what was kept");
        let mut rest = vec![0u8; 18];
        io.read_exact(&mut rest).await.unwrap();
        assert_eq!(rest, b"pt then the socket");
        io.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        b.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }

    #[test]
    fn a_resumed_connection_keeps_no_reference_to_the_buffer_hyper_read_into() {
        // hyper hands over what it read past the handshake as a slice of its read buffer
        // (8 KiB or more), empty or not: held for the tunnel's life it would pin that buffer.
        // As hyper does: the head is split off the read buffer, the rest is what follows it.
        let read = |past_head: usize| {
            let mut read_buf = BytesMut::with_capacity(8192);
            read_buf.put_bytes(7, 100 + past_head);
            let head = read_buf.split_to(100).freeze();
            (head, read_buf.split().freeze())
        };
        let (head, empty_rest) = read(0);
        let io = Resumed::new(empty_rest, tokio::io::empty());
        assert!(head.is_unique(), "an empty rest lets go of the buffer");
        drop(io);

        let (head, rest) = read(2);
        let mut io = Resumed::new(rest, tokio::io::empty());
        assert!(
            !head.is_unique(),
            "the rest holds the buffer until it is read"
        );
        let mut got = [0u8; 4];
        let mut buf = ReadBuf::new(&mut got);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(Pin::new(&mut io).poll_read(&mut cx, &mut buf).is_ready());
        assert_eq!(buf.filled(), [7, 7]);
        assert!(head.is_unique(), "read out, the rest lets go of the buffer");
    }

    #[test]
    fn tunnels_are_handed_to_the_threads_in_turn_and_their_sockets_run_there() {
        let threads = TunnelThreads::start(2).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            let std = std::net::TcpStream::connect(addr).unwrap();
            threads.spawn(async move {
                // A socket made here is served by this thread's event loop.
                let mut s = event_loop::LoopStream::from_std(std).unwrap();
                s.write_all(b"x").await.unwrap();
                let name = std::thread::current().name().map(str::to_owned);
                tx.send(name).unwrap();
            });
        }
        let mut names: Vec<_> = (0..4)
            .map(|_| rx.recv().unwrap().unwrap_or_default())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "switchboard-tunnel-0",
                "switchboard-tunnel-0",
                "switchboard-tunnel-1",
                "switchboard-tunnel-1"
            ]
        );
        drop(listener);
    }

    #[test]
    fn stopping_the_threads_ends_the_tunnels_on_them() {
        let threads = TunnelThreads::start(1).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let std = std::net::TcpStream::connect(addr).unwrap();
        threads.spawn(async move {
            // A tunnel that would hold its socket for good.
            let _held = event_loop::LoopStream::from_std(std).unwrap();
            std::future::pending::<()>().await;
        });
        let (mut peer, _) = listener.accept().unwrap();
        threads.stop();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 1];
        let read = std::io::Read::read(&mut peer, &mut buf);
        assert!(
            matches!(read, Ok(0)),
            "the socket is closed once the threads stop: {read:?}"
        );
    }
}
