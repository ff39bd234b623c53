//! The edge listener's accept loop through the real binary: out of file descriptors it pauses
//! (counted, at most one warning in 10 s) instead of spinning on the failing accept, the connections that arrive
//! meanwhile wait in the backlog, and they are served once descriptors are free again.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use support::{ConfigBuilder, Gateway, PROMPTLY, metric_sum, metrics_text};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Send a request for a path no route serves on `tcp`; `close` asks the gateway to close after
/// answering.
async fn ask(tcp: &mut TcpStream, close: bool) {
    let connection = if close { "close" } else { "keep-alive" };
    let head = format!("GET /nothing-here HTTP/1.1\r\nHost: t\r\nConnection: {connection}\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
}

/// The status line of the answer on `tcp`, read within `within`; `None` if none came.
async fn status_line(tcp: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buf = vec![0u8; 1024];
    let mut got = Vec::new();
    let read = async {
        while !got.windows(2).any(|w| w == b"\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("reading the answer: {e}"),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()?;
    let text = String::from_utf8_lossy(&got);
    text.lines().next().map(str::to_owned)
}

/// The process's open descriptors, by number.
fn open_fds(pid: u32) -> Vec<usize> {
    let mut fds: Vec<usize> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    fds.sort_unstable();
    fds
}

/// The process's open descriptors once they hold still (the harness's start-up probes are
/// closed by the gateway shortly after they were made).
async fn settled_fds(pid: u32) -> Vec<usize> {
    let mut last = open_fds(pid);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = open_fds(pid);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the gateway's open descriptors did not settle: {last:?}");
}

/// The open-files limit that leaves exactly `free` descriptor numbers for new files: the
/// limit bounds the numbers a new descriptor may take, and some in use may lie above it.
fn limit_leaving(open: &[usize], free: usize) -> usize {
    (0..)
        .find(|&limit| limit - open.iter().filter(|&&fd| fd < limit).count() == free)
        .unwrap()
}

/// Lower the running process's open-files limit (soft and hard) to `n`.
fn limit_open_files(pid: u32, n: usize) {
    let out = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={n}:{n}"))
        .output()
        .expect("run prlimit (util-linux)");
    assert!(
        out.status.success(),
        "prlimit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn out_of_file_descriptors_the_listener_pauses_and_serves_the_queued_connections_once_some_close()
 {
    let gw = Gateway::start(&ConfigBuilder::new().yaml()).await;
    let addr: SocketAddr = gw.addr();
    // Room for exactly two more connections.
    let limit = limit_leaving(&settled_fds(gw.pid()).await, 2);
    limit_open_files(gw.pid(), limit);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        ask(&mut tcp, false).await;
        let status = status_line(&mut tcp, PROMPTLY).await;
        assert_eq!(status.as_deref(), Some("HTTP/1.1 404 Not Found"));
        held.push(tcp);
    }
    // The kernel completes these handshakes into the backlog; the gateway cannot accept them.
    let mut queued = Vec::new();
    for _ in 0..5 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        ask(&mut tcp, true).await;
        queued.push(tcp);
    }
    let waited = Duration::from_millis(1500);
    assert_eq!(
        status_line(&mut queued[0], waited).await,
        None,
        "a connection is served while the gateway has no descriptor left: {}",
        gw.log_tail(20)
    );
    drop(held);
    for (i, tcp) in queued.iter_mut().enumerate() {
        let status = status_line(tcp, PROMPTLY).await;
        assert_eq!(
            status.as_deref(),
            Some("HTTP/1.1 404 Not Found"),
            "queued connection {i} once descriptors were free: {}",
            gw.log_tail(20)
        );
    }
    // Paused, not spinning: a failed accept every ACCEPT_BACKOFF (100 ms) over the ~1.5 s
    // without descriptors, where a loop retrying at once fails hundreds of thousands of times.
    let text = metrics_text(&gw).await;
    let errors = metric_sum(
        &text,
        "switchboard_accept_errors_total",
        &[("listener", "public")],
    );
    assert!((1.0..=60.0).contains(&errors), "accept errors {errors}");
    let log = gw.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("cannot accept connections"))
        .count();
    assert_eq!(warnings, 1, "at most one warning in 10 s:\n{log}");
}
