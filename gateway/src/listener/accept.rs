//! The accept loop of an edge listener: accept until told to stop (or until the stop signal's
//! sender is gone), hand each connection on, then close the socket (the listener is the
//! caller's, dropped when this returns), so a stopped gateway refuses new connections at once.
//! Out of descriptors or memory it pauses instead of retrying a call that fails at once.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long a listener stops accepting after an error that is not one connection's (the
/// process is out of file descriptors, the kernel out of memory): accepting again at once would
/// fail again at once, a busy loop on a core the open connections need. Connections wait in the
/// backlog meanwhile.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one warning per listener this often while accepts keep failing (each failure is
/// counted in `switchboard_accept_errors_total`).
const WARN_EVERY: Duration = Duration::from_secs(10);

// Linux errno values accept(2) returns for a connection that failed before it was accepted
// (the man page: "treat them like EAGAIN by retrying") that `ErrorKind` does not name.
const EPROTO: i32 = 71;
const ENOPROTOOPT: i32 = 92;
const EOPNOTSUPP: i32 = 95;
const EHOSTDOWN: i32 = 112;
const ENONET: i32 = 64;

/// An accept error that belongs to one connection (it ended, or its network failed, before it
/// was accepted; a firewall rule refused it): the next one is accepted at once. Anything else
/// (EMFILE, ENFILE, ENOBUFS, ENOMEM, or an error this list does not know) pauses the listener.
fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionRefused
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
            | ErrorKind::NetworkDown
            | ErrorKind::NetworkUnreachable
            | ErrorKind::HostUnreachable
            | ErrorKind::PermissionDenied
    ) || matches!(
        e.raw_os_error(),
        Some(EPROTO | ENOPROTOOPT | EOPNOTSUPP | EHOSTDOWN | ENONET)
    )
}

/// Accept on `listener` (named `name` in logs and metrics) until `stop` says so or its sender
/// is gone, handing each connection to `on_accept` with `TCP_NODELAY` set (frames go out as
/// they are written) and its peer's address in canonical form (an IPv4 client of a dual-stack
/// `[::]` listener is `a.b.c.d`, not `::ffff:a.b.c.d`, so IPv4 `trustedProxies` and per-IP
/// limits see it as such).
pub async fn run(
    listener: &TcpListener,
    name: &str,
    mut stop: watch::Receiver<bool>,
    mut on_accept: impl FnMut(TcpStream, SocketAddr),
) {
    let accept_errors = crate::metrics::metrics()
        .accept_errors
        .with_label_values(&[name]);
    // When the last warning was logged, and how many failures followed it.
    let mut warned: Option<Instant> = None;
    let mut unreported = 0u64;
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        let accepted = tokio::select! {
            biased;
            changed = stop.changed() => match changed {
                Ok(()) => continue,
                Err(_) => break,
            },
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                }
                on_accept(tcp, SocketAddr::new(peer.ip().to_canonical(), peer.port()));
            }
            Err(e) if is_per_connection(&e) => {
                tracing::debug!(listener = %name, error = %e, "a connection failed before it was accepted");
            }
            Err(e) => {
                accept_errors.inc();
                unreported += 1;
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    warned = Some(Instant::now());
                    tracing::warn!(
                        listener = %name,
                        error = %e,
                        failures = unreported,
                        backoff = ?ACCEPT_BACKOFF,
                        "cannot accept connections, pausing; new ones wait in the backlog (out of file descriptors? raise the open files limit)"
                    );
                    unreported = 0;
                }
                tokio::select! {
                    biased;
                    changed = stop.changed() => if changed.is_err() { break },
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    tracing::info!(listener = %name, "stopped accepting");
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A listener on `addr` and the loop accepting on it (its task, the stop sender, and the
    /// peers it was handed, in order).
    struct Running {
        addr: SocketAddr,
        stop: watch::Sender<bool>,
        peers: Arc<Mutex<Vec<SocketAddr>>>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn running(addr: &str, stopped: bool) -> Option<Running> {
        let listener = TcpListener::bind(addr).await.ok()?;
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = watch::channel(stopped);
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = peers.clone();
        let task = tokio::spawn(async move {
            run(&listener, "test", rx, |_tcp, peer| {
                seen.lock().unwrap().push(peer)
            })
            .await;
        });
        Some(Running {
            addr,
            stop,
            peers,
            task,
        })
    }

    impl Running {
        /// The peers handed on, once there is one (or after 5 s).
        async fn handed_on(&self) -> Vec<SocketAddr> {
            for _ in 0..250 {
                if !self.peers.lock().unwrap().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.peers.lock().unwrap().clone()
        }
    }

    async fn ended(task: tokio::task::JoinHandle<()>) {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop ended")
            .unwrap();
    }

    /// Whether a connect to `addr` is refused (the socket is closed), within a few seconds.
    async fn refused(addr: SocketAddr) -> bool {
        for _ in 0..100 {
            match TcpStream::connect(addr).await {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => return true,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        false
    }

    #[tokio::test]
    async fn connections_are_handed_on_until_told_to_stop_then_the_socket_is_closed() {
        let r = running("127.0.0.1:0", false).await.unwrap();
        let client = TcpStream::connect(r.addr).await.unwrap();
        let local = client.local_addr().unwrap();
        assert_eq!(r.handed_on().await, vec![local]);
        r.stop.send(true).unwrap();
        ended(r.task).await;
        assert!(refused(r.addr).await, "the listening socket was closed");
    }

    #[tokio::test]
    async fn a_loop_told_to_stop_before_it_started_accepts_nothing() {
        let r = running("127.0.0.1:0", true).await.unwrap();
        ended(r.task).await;
        assert!(r.peers.lock().unwrap().is_empty());
        assert!(refused(r.addr).await);
    }

    #[tokio::test]
    async fn a_loop_whose_stop_sender_is_gone_ends() {
        let r = running("127.0.0.1:0", false).await.unwrap();
        drop(r.stop);
        ended(r.task).await;
    }

    #[tokio::test]
    async fn an_ipv4_client_of_a_dual_stack_listener_is_seen_with_its_ipv4_address() {
        // Where IPv6 is off, there is no dual-stack listener to test.
        let Some(r) = running("[::]:0", false).await else {
            return;
        };
        let port = r.addr.port();
        // With net.ipv6.bindv6only=1 it is not dual-stack either.
        let Ok(client) = TcpStream::connect(("127.0.0.1", port)).await else {
            return;
        };
        let local = client.local_addr().unwrap();
        assert_eq!(r.handed_on().await, vec![local]);
        assert!(local.is_ipv4());
    }

    #[test]
    fn network_failures_of_one_connection_do_not_pause_the_listener_but_running_out_does() {
        for kind in [
            ErrorKind::ConnectionAborted,
            ErrorKind::NetworkUnreachable,
            ErrorKind::PermissionDenied,
        ] {
            assert!(is_per_connection(&kind.into()), "{kind:?}");
        }
        assert!(is_per_connection(&std::io::Error::from_raw_os_error(
            EPROTO
        )));
        // EMFILE, ENFILE, ENOBUFS, ENOMEM.
        for errno in [24, 23, 105, 12] {
            let e = std::io::Error::from_raw_os_error(errno);
            assert!(!is_per_connection(&e), "{e}");
        }
    }
}
