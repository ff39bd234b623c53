//! The one shutdown root. SIGTERM: readiness fails at once and keep-alive ends (responses carry
//! `Connection: close`); listeners keep accepting for the propagation window; then new requests
//! are refused and every live connection is told to close (each at a random point of its
//! route's drain window, with the route's code); then exit once no connection (HTTP or
//! upgraded) and no HTTP request in flight is left, or at the deadline. Only then is pingora
//! told to stop (its own grace period is set to zero).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio::time::Instant;
use tracing::Instrument;

use crate::metrics::metrics;

/// How long the drain waits, once nothing is open, for anything new before it ends.
const QUIET: Duration = Duration::from_millis(500);

/// Drain state shared by the admin endpoints, the pipeline and every live connection.
pub struct Drain {
    draining: AtomicBool,
    refusing: AtomicBool,
    close: CloseSignal,
    live: AtomicI64,
    requests: AtomicI64,
    http_connections: AtomicI64,
    /// Connections and requests counted in so far (to see that none came during a pause).
    entered: AtomicU64,
    idle: Notify,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            draining: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            close: CloseSignal::default(),
            live: AtomicI64::new(0),
            requests: AtomicI64::new(0),
            http_connections: AtomicI64::new(0),
            entered: AtomicU64::new(0),
            idle: Notify::new(),
        }
    }
}

/// The drain's word to every live connection that it is time to close: set once, never reset.
///
/// Every idle connection waits on it, so the wait is small ([`Closed`], 80 bytes, where a
/// `watch` receiver took 16 and its `changed` future 120, or `wait_for` 144). Waiters are
/// spread over [`CLOSE_SHARDS`] `Notify`s, as tokio's `watch` spreads them, so connections
/// registering and leaving at once (a reconnect storm) seldom wait on the same lock.
#[derive(Clone, Default)]
pub struct CloseSignal(Arc<CloseState>);

/// How many waiter lists a [`CloseSignal`] spreads its waiters over.
const CLOSE_SHARDS: usize = 8;

#[derive(Default)]
struct CloseState {
    closed: AtomicBool,
    notify: [Notify; CLOSE_SHARDS],
    /// The list the next waiter goes on (round robin).
    next: std::sync::atomic::AtomicUsize,
}

impl CloseSignal {
    /// Tell every waiter, present and future (the drain, and tests).
    pub(crate) fn close(&self) {
        self.0.closed.store(true, Ordering::Release);
        for n in &self.0.notify {
            n.notify_waiters();
        }
    }

    /// Whether connections should be closing.
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    /// Resolves once [`close`](Self::close) was called (at once if it already was).
    pub fn closed(&self) -> Closed<'_> {
        let shard = self.0.next.fetch_add(1, Ordering::Relaxed) % CLOSE_SHARDS;
        Closed {
            signal: self,
            // Created now, not at the first poll: a `close` from here on completes it.
            notified: self.0.notify[shard].notified(),
            registered: false,
        }
    }
}

pin_project_lite::pin_project! {
    /// The wait of [`CloseSignal::closed`]. Its first poll registers the task (one lock of
    /// one of the signal's waiter lists, and one more when it is dropped); every later poll
    /// reads the flag only, so a busy connection's wake-ups take no lock. Keep it in the task
    /// that polled it first: it is woken through that task's waker (every use is a
    /// connection's own loop, pinned in its task).
    pub struct Closed<'a> {
        signal: &'a CloseSignal,
        #[pin]
        notified: Notified<'a>,
        registered: bool,
    }
}

impl Future for Closed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.signal.is_closed() {
            return Poll::Ready(());
        }
        if !*this.registered {
            *this.registered = true;
            // A `close` since the flag was read still completes it: the waiter was created
            // before that `close` woke the waiters. After this, `close` sets the flag before
            // it wakes this task, so the flag alone tells.
            return this.notified.poll(cx);
        }
        Poll::Pending
    }
}

/// Held by each live WebSocket; dropping it counts the connection out.
pub struct LiveGuard(Arc<Drain>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let left = self.0.live.fetch_sub(1, Ordering::AcqRel) - 1;
        if self.0.draining.load(Ordering::Acquire) {
            metrics().drain_remaining.set(left);
        }
        if left <= 0 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Held by each HTTP request from its head until its response has been handed over in full
/// (or dropped); the drain waits for these too.
pub struct RequestGuard(Arc<Drain>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let left = self.0.requests.fetch_sub(1, Ordering::AcqRel) - 1;
        if self.0.draining.load(Ordering::Acquire) {
            metrics().drain_requests_remaining.set(left);
        }
        if left <= 0 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Held by each accepted client connection while it speaks HTTP (TLS handshake and request
/// heads included; an upgraded connection is a [`LiveGuard`]'s from then on). The drain waits
/// for these, so a request on a connection accepted just before the drain went idle is
/// answered (refused) instead of cut at exit, and a keep-alive connection gets the answer to
/// its next request (with `Connection: close`); one that never sends another head ends at
/// `limits.handshakeTimeout`.
pub struct ConnectionGuard(Arc<Drain>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.0.http_connections.fetch_sub(1, Ordering::AcqRel) <= 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Drain {
    /// `/readyz` must fail.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// New upgrades must be refused (propagation window over).
    pub fn is_refusing(&self) -> bool {
        self.refusing.load(Ordering::Acquire)
    }

    /// The signal that tells live connections to start closing.
    pub fn close_signal(&self) -> CloseSignal {
        self.close.clone()
    }

    /// Count a live connection in.
    pub fn enter(self: &Arc<Self>) -> LiveGuard {
        self.entered.fetch_add(1, Ordering::AcqRel);
        self.live.fetch_add(1, Ordering::AcqRel);
        LiveGuard(self.clone())
    }

    pub fn live(&self) -> i64 {
        self.live.load(Ordering::Acquire)
    }

    /// Count an HTTP request in flight until the guard drops.
    pub fn enter_request(self: &Arc<Self>) -> RequestGuard {
        self.entered.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    /// HTTP requests whose response has not been handed over in full yet.
    pub fn requests(&self) -> i64 {
        self.requests.load(Ordering::Acquire)
    }

    /// Count an accepted client connection in while it speaks HTTP.
    pub fn enter_connection(self: &Arc<Self>) -> ConnectionGuard {
        self.entered.fetch_add(1, Ordering::AcqRel);
        self.http_connections.fetch_add(1, Ordering::AcqRel);
        ConnectionGuard(self.clone())
    }

    fn is_idle(&self) -> bool {
        self.live() <= 0
            && self.requests() <= 0
            && self.http_connections.load(Ordering::Acquire) <= 0
    }

    /// Run the drain; returns whether every connection closed before the deadline.
    pub async fn run(&self, propagation: Duration, deadline: Duration) -> bool {
        let start = Instant::now();
        self.draining.store(true, Ordering::Release);
        metrics().draining.set(1);
        metrics().drain_remaining.set(self.live());
        metrics().drain_requests_remaining.set(self.requests());
        tracing::info!(
            ?propagation,
            ?deadline,
            live = self.live(),
            requests = self.requests(),
            "drain: readiness off, keep-alive off, propagation window"
        );
        tokio::time::sleep(propagation).await;
        self.refusing.store(true, Ordering::Release);
        self.close.close();
        tracing::info!(
            live = self.live(),
            requests = self.requests(),
            "drain: refusing new requests, closing connections across their routes' windows"
        );
        let end = start + deadline;
        loop {
            let idle = self.idle.notified();
            if self.is_idle() {
                // A client whose last answer just ended keep-alive may be connecting again this
                // very moment; exiting now would reset it unanswered. End only after a quiet
                // pause with nothing new, so that such a client is answered (refused) first.
                let seen = self.entered.load(Ordering::Acquire);
                tokio::select! {
                    _ = tokio::time::sleep(QUIET) => {}
                    _ = tokio::time::sleep_until(end) => return self.is_idle(),
                }
                if self.is_idle() && self.entered.load(Ordering::Acquire) == seen {
                    return true;
                }
                continue;
            }
            tokio::select! {
                _ = idle => {}
                _ = tokio::time::sleep_until(end) => return self.is_idle(),
                // Re-check now and then in case a notification raced the count.
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

/// A uniformly random point of a drain window: each connection closes at its own moment so
/// clients do not reconnect in one stampede.
pub fn jitter(window: Duration) -> Duration {
    let ms = window.as_millis().min(u128::from(u64::MAX)) as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::random_range(0..ms))
}

/// pingora's shutdown hook: our drain runs before pingora stops the services (and with them
/// the listeners' accept loops).
pub struct DrainingSignal {
    pub drain: Arc<Drain>,
    /// Reads `(drain.propagation, drain.deadline)` from the live config when SIGTERM arrives,
    /// so a reload that changed them is honoured.
    pub settings: Box<dyn Fn() -> (Duration, Duration) + Send + Sync>,
}

#[async_trait]
impl ShutdownSignalWatch for DrainingSignal {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {
                tracing::info!("SIGINT: fast shutdown (use SIGTERM for a graceful drain)");
                return ShutdownSignal::FastShutdown;
            }
        }
        let (propagation, deadline) = (self.settings)();
        tracing::info!("SIGTERM: draining");
        let started = Instant::now();
        // Exported (when tracing is on) and flushed by the process's shutdown after pingora stops.
        let span = tracing::info_span!(
            target: crate::telemetry::TARGET,
            "drain",
            connections = self.drain.live(),
            duration_ms = tracing::field::Empty,
            outcome = tracing::field::Empty,
            left = tracing::field::Empty,
        );
        let clean = async {
            tokio::select! {
                clean = self.drain.run(propagation, deadline) => clean,
                _ = int.recv() => false,
                _ = term.recv() => false,
            }
        }
        .instrument(span.clone())
        .await;
        span.record("duration_ms", started.elapsed().as_millis() as u64);
        span.record("outcome", if clean { "graceful" } else { "forced" });
        span.record("left", self.drain.live());
        drop(span);
        if clean {
            tracing::info!(elapsed = ?started.elapsed(), "drain complete: graceful exit");
            // Graceful: pingora lets the runtimes finish the polls in progress (up to
            // `graceful_shutdown_timeout_seconds`), so a connection whose last stream just
            // ended still writes its final bytes (an SSE body's terminating chunk) before the
            // process exits. The drain already waited, so pingora adds no grace period.
            ShutdownSignal::GracefulTerminate
        } else {
            tracing::warn!(
                elapsed = ?started.elapsed(),
                left = self.drain.live(),
                requests_left = self.drain.requests(),
                http_connections_left = self.drain.http_connections.load(Ordering::Acquire),
                "drain deadline reached: forced exit"
            );
            ShutdownSignal::FastShutdown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(drain: &Arc<Drain>) -> tokio::task::JoinHandle<bool> {
        let drain = drain.clone();
        tokio::spawn(async move {
            drain
                .run(Duration::from_secs(1), Duration::from_secs(60))
                .await
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_waits_for_an_http_request_in_flight_until_its_response_is_sent() {
        let drain = Arc::new(Drain::default());
        let request = drain.enter_request();
        let run = start(&drain);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(drain.is_draining());
        assert!(drain.is_refusing(), "the propagation window is over");
        assert!(!run.is_finished(), "the request holds the drain");
        drop(request);
        assert!(run.await.expect("drain task"), "a graceful exit");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_still_in_flight_at_the_deadline_makes_the_exit_forced() {
        let drain = Arc::new(Drain::default());
        let _request = drain.enter_request();
        let run = start(&drain);
        assert!(!run.await.expect("drain task"), "forced at the deadline");
        assert_eq!(drain.requests(), 1);
    }

    #[tokio::test]
    async fn a_connection_waiting_on_the_close_signal_wakes_when_the_drain_closes() {
        let signal = CloseSignal::default();
        let waiter = tokio::spawn({
            let signal = signal.clone();
            async move { signal.closed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "not closed yet");
        assert!(!signal.is_closed());
        signal.close();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by close")
            .expect("waiter task");
        assert!(signal.is_closed());
    }

    /// Counts the wake-ups of a hand-polled future.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_registered_wait_is_woken_by_the_close_and_reads_only_the_flag_until_then() {
        let signal = CloseSignal::default();
        let wakes = Arc::new(Wakes(Default::default()));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut wait = std::pin::pin!(signal.closed());
        assert!(wait.as_mut().poll(&mut cx).is_pending(), "registers");
        assert!(wait.as_mut().poll(&mut cx).is_pending(), "the flag alone");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        signal.close();
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "the close wakes the task"
        );
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_wait_built_before_a_close_is_completed_by_it_even_before_its_first_poll() {
        // The wake-up alone (flag not set): what a `close` racing the first poll, after its
        // flag check, looks like to the wait.
        let signal = CloseSignal::default();
        let mut wait = std::pin::pin!(signal.closed());
        for n in &signal.0.notify {
            n.notify_waiters();
        }
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(wait.as_mut().poll(&mut cx).is_ready());
        // And a wait begun after the close ends at once.
        signal.close();
        assert!(std::pin::pin!(signal.closed()).poll(&mut cx).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_run_sets_the_close_signal_after_the_propagation_window() {
        let drain = Arc::new(Drain::default());
        let signal = drain.close_signal();
        let _live = drain.enter();
        let run = tokio::spawn({
            let drain = drain.clone();
            async move {
                drain
                    .run(Duration::from_millis(200), Duration::from_millis(400))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!signal.is_closed(), "not during the propagation window");
        tokio::time::timeout(Duration::from_secs(5), signal.closed())
            .await
            .expect("closed after the window");
        assert!(
            !run.await.expect("drain task"),
            "the live connection held it to the deadline"
        );
    }
}
