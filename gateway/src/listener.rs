//! The edge listeners: the gateway accepts their connections itself (`accept.rs`), on the edge
//! runtime, then terminates TLS with rustls when configured, serves HTTP/1.1 with hyper
//! (header-read timeout, header count/size caps) and hands every request to the pipeline.
//! Upgraded connections are owned by the gateway's tunnel, not by pingora-proxy. pingora runs
//! the services (an edge listener is one, so its stop signal and the fast shutdown reach it) and
//! the admin listener, whose connections it accepts.
//!
//! Why not pingora's accept loop for the edge: every connection it accepts carries pingora's
//! per-socket state (its `Stream` box, socket digest and a control-message buffer, ~1 kB) for its
//! whole life, which for an idle WebSocket is a quarter of what it costs (docs/operations.md).

mod accept;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd;
use std::sync::Arc;

use async_trait::async_trait;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::abort::ConnAbort;
use crate::gateway::Gateway;
use crate::pipeline::{Conn, handle};

/// A listen address that cannot be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} ({what}): {}", describe(.source))]
pub struct BindError {
    /// Which listener: `listener <name>` or `admin`.
    pub what: String,
    pub address: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "address already in use (is another gateway or process listening there?)".into()
        }
        std::io::ErrorKind::AddrNotAvailable => "address not available on this host".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied (a port below 1024?)".into(),
        _ => e.to_string(),
    }
}

/// How many connections the kernel may queue on a listener before they are accepted (capped by
/// `net.core.somaxconn`, 4,096 by default): pingora's value. std's 128 drops the SYNs of a
/// reconnect storm, and a client whose SYN is dropped retries after a second.
const BACKLOG: i32 = 65_535;

/// A listen address as bound at start-up. `addr` is the address it serves: the configured one,
/// or the port the kernel picked when the configured port is 0.
#[derive(Debug)]
pub struct Bound {
    /// `edge` (a listener of the config) or `admin`.
    pub role: &'static str,
    /// The listener's name (`admin` for the admin listener).
    pub name: String,
    pub addr: SocketAddr,
    /// The bound, listening socket (non-blocking, for tokio).
    socket: TcpListener,
    /// The configured port was 0: the socket must be the one served on, since binding port 0
    /// again would pick another port.
    port_zero: bool,
}

impl Bound {
    /// `service` with this address added as its TCP listener (`listen` adds it, given the
    /// address as pingora takes it), for a listener pingora accepts on (the admin's): a port-0
    /// socket bound here is handed to pingora, a fixed port is let go and pingora binds it again.
    /// With `runtime` the service (its accept loops and every connection they accept) runs
    /// there instead of on the runtime pingora makes for it.
    pub fn serve<S>(
        self,
        mut service: S,
        runtime: Option<Handle>,
        listen: impl FnOnce(&mut S, String),
    ) -> Prebound<S>
    where
        S: ServiceWithDependents,
    {
        listen(&mut service, self.addr.to_string());
        Prebound {
            name: service.name().to_owned(),
            threads: service.threads(),
            listen_addresses: service.listen_addresses(),
            inner: Some(service),
            socket: self.port_zero.then(|| (self.addr.to_string(), self.socket)),
            runtime,
        }
    }

    /// An edge listener on this socket: the gateway's own accept loop, serving each connection
    /// with `app`, run by pingora as a service on the edge `runtime` (where the connections run).
    pub fn edge_listener(self, app: EdgeApp, runtime: Handle) -> Prebound<EdgeListener> {
        let listener = EdgeListener::new(app, self.socket);
        Prebound {
            name: listener.name().to_owned(),
            threads: None,
            listen_addresses: None,
            inner: Some(listener),
            socket: None,
            runtime: Some(runtime),
        }
    }
}

/// A listening socket on `address`: `SO_REUSEADDR` (a restarted gateway binds while the last
/// one's connections are in TIME_WAIT), [`BACKLOG`], non-blocking and close-on-exec. An IPv6
/// socket is dual-stack whatever `net.ipv6.bindv6only` says (`[::]:P` takes the port on every
/// address, as config validation assumes).
fn listen(address: &SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(*address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if address.is_ipv6() {
        // Refused only where the host has no IPv4: then it is IPv6-only anyway.
        let _ = socket.set_only_v6(false);
    }
    socket.set_reuse_address(true)?;
    socket.bind(&(*address).into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Bind each address before anything is served, so that a busy one fails start-up at once
/// (pingora retries a busy address forever, "in use, will try again", so a second gateway on a
/// busy port would hang instead of failing). An edge listener's socket is the one it serves on
/// ([`Bound::edge_listener`]); the admin's is handed to pingora ([`Bound::serve`]).
/// Then one `listening` line per address, with the bound address (`role`, `name`, `addr`):
/// how a supervisor or a test learns which port 0 became.
pub fn bind_all<'a>(
    addresses: impl IntoIterator<Item = (&'static str, &'a str, &'a SocketAddr)>,
) -> Result<Vec<Bound>, BindError> {
    let mut bound = Vec::new();
    for (role, name, address) in addresses {
        let error = |source| BindError {
            what: match role {
                "admin" => "admin".to_owned(),
                _ => format!("listener {name}"),
            },
            address: *address,
            source,
        };
        let socket = listen(address).map_err(error)?;
        let addr = socket.local_addr().map_err(error)?;
        bound.push(Bound {
            role,
            name: name.to_owned(),
            addr,
            socket,
            port_zero: address.port() == 0,
        });
    }
    for b in &bound {
        tracing::info!(role = %b.role, name = %b.name, addr = %b.addr, "listening");
    }
    Ok(bound)
}

/// A pingora service that serves on a socket bound before it started (see [`bind_all`]):
/// pingora looks a listen address up in its table of inherited sockets before binding it, so
/// the socket goes into that table under its address when the service starts.
///
/// With a `runtime` the service starts there: pingora gives every service a runtime of its
/// own, and the edge listeners share the gateway's edge runtime with the room bus's NATS
/// client instead (made at start-up), so a message crossing pods is not handed from one thread
/// pool to another on its way in or out. pingora's own runtime for the service is then kept
/// to one idle thread.
pub struct Prebound<S> {
    inner: Option<S>,
    name: String,
    threads: Option<usize>,
    listen_addresses: Option<Vec<String>>,
    socket: Option<(String, TcpListener)>,
    runtime: Option<Handle>,
}

#[async_trait]
impl<S: ServiceWithDependents + 'static> ServiceWithDependents for Prebound<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        if let (Some(fds), Some((addr, socket))) = (&fds, self.socket.take()) {
            fds.lock().add(addr, socket.into_raw_fd());
        }
        // pingora starts a service once; a second start has nothing to run.
        let Some(mut inner) = self.inner.take() else {
            tracing::error!(service = %self.name, "service started twice");
            return;
        };
        let Some(rt) = &self.runtime else {
            inner
                .start_service(fds, shutdown, listeners_per_fd, ready_notifier)
                .await;
            return;
        };
        // The service on the edge runtime hears its own stop signal, relayed from pingora's: a
        // graceful shutdown passes through, and a fast one (pingora drops this future with its
        // runtime, and never signals) stops the accept loops when the relay is dropped.
        let (stop, inner_shutdown) = watch::channel(*shutdown.borrow());
        let stop = StopOnDrop(stop);
        let run = rt.spawn(async move {
            inner
                .start_service(fds, inner_shutdown, listeners_per_fd, ready_notifier)
                .await;
        });
        tokio::pin!(run);
        let mut shutdown = shutdown;
        let ended = loop {
            tokio::select! {
                ended = &mut run => break ended,
                changed = shutdown.changed() => {
                    // Sender gone (the server is being dropped): stop as well.
                    let now = changed.is_err() || *shutdown.borrow();
                    stop.0.send_replace(now);
                    if changed.is_err() {
                        break run.await;
                    }
                }
            }
        };
        if let Err(e) = ended {
            tracing::error!(service = %self.name, error = %e, "service ended abnormally");
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        if self.runtime.is_some() {
            Some(1)
        } else {
            self.threads
        }
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.listen_addresses.clone()
    }
}

/// Tells a relayed service to stop when its relay is dropped.
struct StopOnDrop(watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// An edge listener as a pingora service: its socket (bound at start-up) and the app that
/// serves what its accept loop (`listener/accept.rs`) accepts, one task per connection.
pub struct EdgeListener {
    name: String,
    app: Arc<EdgeApp>,
    socket: Option<TcpListener>,
}

impl EdgeListener {
    pub fn new(app: EdgeApp, socket: TcpListener) -> Self {
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
        let listener = match tokio::net::TcpListener::from_std(socket) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(service = %self.name, error = %e, "cannot accept on the edge listener");
                return;
            }
        };
        ready.notify_ready();
        let app = &self.app;
        accept::run(&listener, &app.listener, shutdown, |tcp, peer| {
            tokio::spawn(app.clone().serve_accepted(tcp, peer));
        })
        .await;
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// What serves the connections one edge listener accepts: TLS, then HTTP.
pub struct EdgeApp {
    pub gateway: Arc<Gateway>,
    pub tls: Option<TlsAcceptor>,
    /// The listener's name in the config (its settings are read per connection, so a reload
    /// applies to new connections).
    pub listener: String,
}

impl EdgeApp {
    async fn serve<I>(&self, io: I, conn: Conn)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = self.gateway.config.load().limits.clone();
        let gw = self.gateway.clone();
        // A handler that must end its own connection (an SSE stream whose client stopped
        // reading) finds the connection's abort handle in the request's extensions.
        let abort = ConnAbort::default();
        let io = abort.wrap(io);
        let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(abort.clone());
            handle(gw.clone(), conn, req)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.handshake_timeout)
            .max_headers(limits.max_header_count)
            .max_buf_size(limits.max_header_bytes.max(8192))
            .keep_alive(true);
        let http = builder
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades();
        // No graceful shutdown at the drain: closing an idle keep-alive connection races the
        // client's next request on it (cut without an answer). Its next request is answered
        // instead, with `Connection: close` (refused once the propagation window is over; see
        // `pipeline::handle`), and a connection that stays idle ends at the header timeout.
        // The drain waits for both (`Drain::enter_connection`).
        let result = http.await;
        if let Err(e) = result {
            if e.is_parse_too_large() {
                // hyper answered 431 itself, before any route matched: count it like the
                // pipeline's refusals so the error table's `headers_too_large` is real.
                let m = crate::metrics::metrics();
                let label = crate::error::Refusal::HeadersTooLarge.label();
                m.refusals.with_label_values(&["", label]).inc();
                m.connections_total
                    .with_label_values(&["", "refused"])
                    .inc();
            } else if e.is_timeout() {
                // Slowloris guard (or an idle keep-alive connection): hyper closes without a
                // response; count it so a flood of half-open heads is visible.
                crate::metrics::metrics()
                    .handshake_timeouts
                    .with_label_values(&["headers"])
                    .inc();
            }
            tracing::debug!(peer = %conn.peer, error = %e, "client connection ended with an HTTP error");
        }
    }

    /// Serve one accepted client connection to its end: TLS first when the listener has it
    /// (bounded by `limits.handshakeTimeout`), then HTTP. Counted by the drain until it is
    /// upgraded or closed, so the drain answers it before the exit.
    pub async fn serve_accepted(self: Arc<Self>, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        let _open = self.gateway.drain.enter_connection();
        let paths = self
            .gateway
            .config
            .load()
            .listeners
            .iter()
            .find(|l| l.name == self.listener)
            .map(|l| l.paths)
            .unwrap_or_default();
        match &self.tls {
            None => {
                self.serve(
                    tcp,
                    Conn {
                        peer,
                        tls: false,
                        paths,
                    },
                )
                .await
            }
            Some(acceptor) => {
                let timeout = self.gateway.config.load().limits.handshake_timeout;
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        self.serve(
                            tls,
                            Conn {
                                peer,
                                tls: true,
                                paths,
                            },
                        )
                        .await
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => {
                        crate::metrics::metrics()
                            .handshake_timeouts
                            .with_label_values(&["tls"])
                            .inc();
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    /// A service that records the thread it was started on.
    struct Probe(Arc<std::sync::Mutex<Option<String>>>);

    #[async_trait]
    impl ServiceWithDependents for Probe {
        async fn start_service(
            &mut self,
            _fds: Option<ListenFds>,
            _shutdown: ShutdownWatch,
            _listeners_per_fd: usize,
            _ready: ServiceReadyNotifier,
        ) {
            *self.0.lock().unwrap() = std::thread::current().name().map(str::to_owned);
        }

        fn name(&self) -> &str {
            "probe"
        }
    }

    /// A service that runs, as pingora's accept loop does, until its shutdown signal says stop;
    /// the flag is set when it was told to stop (not when the signal's sender vanished, which
    /// pingora's loop logs as an error).
    struct Loop(Arc<AtomicBool>);

    #[async_trait]
    impl ServiceWithDependents for Loop {
        async fn start_service(
            &mut self,
            _fds: Option<ListenFds>,
            mut shutdown: ShutdownWatch,
            _listeners_per_fd: usize,
            _ready: ServiceReadyNotifier,
        ) {
            while !*shutdown.borrow_and_update() {
                if shutdown.changed().await.is_err() {
                    return;
                }
            }
            self.0.store(true, Ordering::SeqCst);
        }

        fn name(&self) -> &str {
            "loop"
        }
    }

    fn bound() -> Bound {
        Bound {
            role: "edge",
            name: "public".into(),
            addr: "127.0.0.1:0".parse().unwrap(),
            socket: TcpListener::bind("127.0.0.1:0").unwrap(),
            port_zero: false,
        }
    }

    fn edge_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("edge-under-test")
            .enable_all()
            .build()
            .unwrap()
    }

    fn ready() -> ServiceReadyNotifier {
        ServiceReadyNotifier::new(tokio::sync::watch::channel(false).0)
    }

    async fn started_on(runtime: Option<Handle>) -> Option<String> {
        let seen = Arc::new(std::sync::Mutex::new(None));
        let mut svc = bound().serve(Probe(seen.clone()), runtime, |_, _| {});
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        svc.start_service(None, shutdown, 1, ready()).await;
        seen.lock().unwrap().clone()
    }

    async fn eventually(flag: &AtomicBool) -> bool {
        for _ in 0..500 {
            if flag.load(Ordering::SeqCst) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_connect_burst_waits_in_the_listeners_backlog_until_accepted_none_dropped() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let bound = bind_all([("edge", "public", &addr)]).unwrap();
        let addr = bound[0].addr;
        // More than std's backlog of 128, less than the kernel's cap: a SYN the queue has no
        // room for is dropped, and that client's connect would wait for its retry (1 s).
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .map_or(4096, |s| s.trim().parse().unwrap_or(4096));
        if somaxconn <= 129 {
            // std's backlog would hold as many: nothing to tell apart on this kernel.
            return;
        }
        let burst = 600.min(somaxconn);
        let mut held = Vec::new();
        for i in 0..burst {
            let tcp = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            .unwrap_or_else(|_| panic!("connect {i} of {burst} was not queued"))
            .unwrap();
            held.push(tcp);
        }
        // And the queue is the listener's: each is accepted in turn.
        let listener =
            tokio::net::TcpListener::from_std(bound.into_iter().next().unwrap().socket).unwrap();
        for _ in 0..burst {
            listener.accept().await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_listener_given_the_edge_runtime_serves_there_not_on_pingoras_runtime() {
        let edge = edge_runtime();
        let on = started_on(Some(edge.handle().clone())).await;
        assert_eq!(on.as_deref(), Some("edge-under-test"));
        let mut svc = bound().serve(
            Probe(Arc::default()),
            Some(edge.handle().clone()),
            |_, _| {},
        );
        assert_eq!(
            svc.threads(),
            Some(1),
            "pingora's own runtime stays one idle thread"
        );
        assert_eq!(svc.name(), "probe");
        // A second start (pingora never does this) runs nothing and does not panic.
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        svc.start_service(None, shutdown.clone(), 1, ready()).await;
        svc.start_service(None, shutdown, 1, ready()).await;
        edge.shutdown_background();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_listener_without_a_runtime_serves_where_pingora_starts_it() {
        let here = std::thread::current().name().map(str::to_owned);
        assert_eq!(started_on(None).await, here);
    }

    /// A [`Loop`] started on `edge` as pingora starts a service, running until told to stop:
    /// its stopped flag, pingora's shutdown sender, and the task pingora would hold.
    async fn a_running_loop(
        edge: &tokio::runtime::Runtime,
    ) -> (
        Arc<AtomicBool>,
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let stopped = Arc::new(AtomicBool::new(false));
        let mut svc = bound().serve(
            Loop(stopped.clone()),
            Some(edge.handle().clone()),
            |_, _| {},
        );
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let started =
            tokio::spawn(async move { svc.start_service(None, shutdown, 1, ready()).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!stopped.load(Ordering::SeqCst), "runs until told to stop");
        (stopped, stop, started)
    }

    #[tokio::test]
    async fn a_graceful_shutdown_reaches_a_listener_on_the_edge_runtime() {
        let edge = edge_runtime();
        let (stopped, stop, started) = a_running_loop(&edge).await;
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), started)
            .await
            .expect("start_service returns once the service stopped")
            .unwrap();
        assert!(stopped.load(Ordering::SeqCst));
        edge.shutdown_background();
    }

    #[tokio::test]
    async fn a_fast_shutdown_that_drops_pingoras_runtime_stops_a_listener_on_the_edge_runtime() {
        let edge = edge_runtime();
        // pingora's fast shutdown sends nothing: it drops the service's runtime, and with it
        // the future that started the service.
        let (stopped, _stop, started) = a_running_loop(&edge).await;
        started.abort();
        assert!(
            eventually(&stopped).await,
            "the accept loop was told to stop"
        );
        edge.shutdown_background();
    }
}
