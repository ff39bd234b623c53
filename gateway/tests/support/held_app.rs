//! A plain HTTP app that holds requests: `/slow` (any path ending in `/slow`) is answered only
//! once the test releases it, so it stays in flight as long as the test needs (a long-poll of
//! Socket.IO's polling transport, a slow download); a path ending in `/poll` is answered after
//! [`POLL_HOLD`] (a short long-poll); anything else is answered at once. Every answer is
//! `200 app answered <path>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long the app holds a `/poll` request.
pub const POLL_HOLD: std::time::Duration = std::time::Duration::from_millis(300);

pub struct HeldApp {
    port: u16,
    held: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl HeldApp {
    /// Serve on `127.0.0.1:0`.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
        let port = listener.local_addr().expect("app address").port();
        let held = Arc::new(AtomicUsize::new(0));
        let (release, released) = watch::channel(false);
        let count = held.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (count, released) = (count.clone(), released.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (count, mut released) = (count.clone(), released.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            if path.ends_with("/slow") {
                                count.fetch_add(1, Ordering::SeqCst);
                                let _ = released.wait_for(|r| *r).await;
                            } else if path.ends_with("/poll") {
                                tokio::time::sleep(POLL_HOLD).await;
                            }
                            Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::from(
                                format!("app answered {path}"),
                            ))))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            port,
            held,
            release,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `/slow` requests that have arrived (answered or still held).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Answer every held `/slow` request, and later ones at once.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }
}

impl Drop for HeldApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}
