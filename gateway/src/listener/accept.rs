//! An edge listener's accept loop, run by pingora as a service on the edge runtime: it accepts
//! until the service is told to stop (or its stop relay is dropped by a fast shutdown), spawns
//! one task per connection ([`EdgeApp::serve_accepted`]) and then closes the socket, so a
//! stopped gateway refuses new connections at once.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};
use tokio::net::TcpListener;

use super::EdgeApp;

/// How long a listener stops accepting after an error that is not one connection's (the
/// process is out of file descriptors, the kernel out of memory): accepting again at once would
/// fail again at once, a busy loop on a core the open connections need. Connections wait in the
/// backlog meanwhile.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one warning per listener this often while accepts keep failing (each failure is
/// counted in `switchboard_accept_errors_total`).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// One edge listener: its socket (bound at start-up) and the app that serves what it accepts.
pub struct EdgeListener {
    name: String,
    app: Arc<EdgeApp>,
    socket: Option<std::net::TcpListener>,
}

impl EdgeListener {
    pub fn new(app: EdgeApp, socket: std::net::TcpListener) -> Self {
        Self {
            name: format!("edge {}", app.listener),
            app: Arc::new(app),
            socket: Some(socket),
        }
    }
}

#[async_trait]
impl ServiceWithDependents for EdgeListener {
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
        ready: ServiceReadyNotifier,
    ) {
        let Some(socket) = self.socket.take() else {
            tracing::error!(service = %self.name, "edge listener started twice");
            return;
        };
        let listener = match TcpListener::from_std(socket) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(service = %self.name, error = %e, "cannot accept on the edge listener");
                return;
            }
        };
        ready.notify_ready();
        run(&self.app, &listener, shutdown).await;
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// An accept error that belongs to one connection (the client gave up before it was accepted):
/// the next one is accepted at once.
fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionRefused
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
    )
}

/// Accept on `listener` until `shutdown` says stop (or its sender is gone).
async fn run(app: &Arc<EdgeApp>, listener: &TcpListener, mut shutdown: ShutdownWatch) {
    let accept_errors = crate::metrics::metrics()
        .accept_errors
        .with_label_values(&[app.listener.as_str()]);
    // When the last warning was logged, and how many failures followed it.
    let mut warned: Option<Instant> = None;
    let mut unreported = 0u64;
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        let accepted = tokio::select! {
            biased;
            changed = shutdown.changed() => match changed {
                Ok(()) => continue,
                Err(_) => break,
            },
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // Frames go out as they are written, not held back for more (as pingora did).
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                }
                tokio::spawn(app.clone().serve_accepted(tcp, peer));
            }
            Err(e) if is_per_connection(&e) => {
                tracing::debug!(listener = %app.listener, error = %e, "a connection ended before it was accepted");
            }
            Err(e) => {
                accept_errors.inc();
                unreported += 1;
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    warned = Some(Instant::now());
                    tracing::warn!(
                        listener = %app.listener,
                        error = %e,
                        failures = unreported,
                        backoff = ?ACCEPT_BACKOFF,
                        "cannot accept connections, pausing; new ones wait in the backlog (raise the open files limit?)"
                    );
                    unreported = 0;
                }
                tokio::select! {
                    biased;
                    changed = shutdown.changed() => if changed.is_err() { break },
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    tracing::info!(listener = %app.listener, "edge listener stopped accepting");
}
