//! Where proxied tunnels run: one single-threaded runtime per edge worker, each on a thread of
//! its own with its own event loop. After the upgrade a tunnel over plain TCP (one task that
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
use tokio::runtime::Handle;

/// The tunnel threads: tunnels are handed to them in turn.
pub struct TunnelThreads {
    handles: Box<[Handle]>,
    next: AtomicUsize,
}

impl std::fmt::Debug for TunnelThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelThreads")
            .field("threads", &self.handles.len())
            .finish()
    }
}

impl TunnelThreads {
    /// Start `n` (at least one) threads named `switchboard-tunnel-<i>`, each running its
    /// runtime until the process exits.
    pub fn start(n: usize) -> io::Result<Self> {
        let mut handles = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            std::thread::Builder::new()
                .name(format!("switchboard-tunnel-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        }
        Ok(Self {
            handles: handles.into_boxed_slice(),
            next: AtomicUsize::new(0),
        })
    }

    /// Run `task` on the next thread. Sockets it makes from `std` sockets there
    /// (`TcpStream::from_std`) are registered with that thread's event loop.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        drop(self.handles[i].spawn(task));
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
    fn tunnels_are_handed_to_the_threads_in_turn_and_their_sockets_run_there() {
        let threads = TunnelThreads::start(2).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            threads.spawn(async move {
                // A socket made here is served by this thread's event loop.
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
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
}
