//! 5,000 concurrent WebSockets through the real binary: opened 200 at a time, each exchanging a
//! message right after its 101, then all held open together. Not one may be torn down after its
//! 101: every connection echoes again once all are open, and all close cleanly with 1000 seen by
//! the app.
//!
//! File descriptors: this process holds the 5,000 client sockets and the echo server's 5,000;
//! the gateway holds 10,000. Both stay under the open-file limit checked first.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{
    EchoServer, Gateway, PROMPTLY, WsClient, assert_echo, close_normally, eventually, metric_sum,
    metrics_text, proxy_config, ws_try_connect,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const CONNECTIONS: usize = 5_000;
const AT_ONCE: usize = 200;
/// Both processes hold two sockets per connection, plus a margin for everything else.
const FD_NEEDED: u64 = 2 * CONNECTIONS as u64 + 2_000;

fn open_file_limit() -> u64 {
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n")
        .output()
        .expect("run sh -c 'ulimit -n'");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if text == "unlimited" {
        return u64::MAX;
    }
    text.parse()
        .unwrap_or_else(|_| panic!("ulimit -n said {text:?}"))
}

/// Run `step` on every connection, `AT_ONCE` at a time; returns the connections that passed and
/// the failures.
async fn each<F, Fut>(clients: Vec<WsClient>, step: F) -> (Vec<WsClient>, Vec<String>)
where
    F: Fn(usize, WsClient) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<WsClient, String>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(AT_ONCE));
    let mut tasks = JoinSet::new();
    for (i, ws) in clients.into_iter().enumerate() {
        let (permits, step) = (permits.clone(), step.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            step(i, ws).await
        });
    }
    collect(tasks).await
}

async fn collect(mut tasks: JoinSet<Result<WsClient, String>>) -> (Vec<WsClient>, Vec<String>) {
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(ws)) => ok.push(ws),
            Ok(Err(e)) => failed.push(e),
            Err(e) => failed.push(format!("task panicked: {e}")),
        }
    }
    (ok, failed)
}

/// An assertion inside a task becomes a failure record instead of a lost panic.
async fn guarded<Fut>(what: String, fut: Fut) -> Result<WsClient, String>
where
    Fut: std::future::Future<Output = WsClient> + Send + 'static,
{
    tokio::spawn(fut).await.map_err(|e| format!("{what}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_concurrent_websockets_are_never_torn_down_after_their_101() {
    let limit = open_file_limit();
    assert!(
        limit >= FD_NEEDED,
        "`ulimit -n` is {limit}; this test needs {FD_NEEDED} (raise it with `ulimit -n 20000`)"
    );
    let echo = EchoServer::start().await;
    let gateway = Gateway::start(&proxy_config(&[echo.port()])).await;
    let url = gateway.ws_url("/race");
    let started = Instant::now();

    // Open, AT_ONCE at a time; each exchanges one message right after its 101 and stays open.
    let permits = Arc::new(Semaphore::new(AT_ONCE));
    let mut tasks = JoinSet::new();
    for i in 0..CONNECTIONS {
        let (permits, url) = (permits.clone(), url.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            let ws = ws_try_connect(url.as_str())
                .await
                .map_err(|e| format!("connection {i}: handshake: {e}"))?;
            guarded(format!("connection {i}: first echo"), async move {
                let mut ws = ws;
                assert_echo(&mut ws, &format!("hello {i}")).await;
                ws
            })
            .await
        });
    }
    let (clients, failed) = collect(tasks).await;
    let opened = started.elapsed();
    println!(
        "race: {} of {CONNECTIONS} connections upgraded and echoed ({} failed) in {opened:?}",
        clients.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "first failures: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert_eq!(echo.connections(), CONNECTIONS);
    assert_eq!(
        echo.open_connections(),
        CONNECTIONS,
        "all held open at once"
    );

    // All open together: every one still works (none was torn down after its 101).
    let (clients, failed) = each(clients, |i, ws| {
        guarded(format!("connection {i}: second echo"), async move {
            let mut ws = ws;
            assert_echo(&mut ws, &format!("still here {i}")).await;
            ws
        })
    })
    .await;
    println!(
        "race: {} of {CONNECTIONS} connections echoed again with all open ({} failed)",
        clients.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "first failures: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert_eq!(echo.open_connections(), CONNECTIONS);

    // Close every one with 1000; the app sees 1000s.
    let (closed, failed) = each(clients, |i, ws| {
        guarded(format!("connection {i}: close"), async move {
            let mut ws = ws;
            close_normally(&mut ws).await;
            ws
        })
    })
    .await;
    assert!(
        failed.is_empty(),
        "first failures: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert_eq!(closed.len(), CONNECTIONS);
    let app_closes = echo.wait_closes(CONNECTIONS, PROMPTLY).await;
    let normal = app_closes
        .iter()
        .filter(|c| c.as_ref().map(|(code, _)| *code) == Some(1000))
        .count();
    println!(
        "race: {normal} of {CONNECTIONS} closed with 1000 at the app; total {:?}",
        started.elapsed()
    );
    assert_eq!(normal, CONNECTIONS, "{:?}", &app_closes[..5]);
    // A liveness wait, not a timing assertion: 5,000 close handshakes on a loaded 2-core
    // machine can take a while to be counted.
    eventually(
        "every connection end counted as a 1000 close",
        Duration::from_secs(60),
        || async {
            let text = metrics_text(&gateway).await;
            metric_sum(
                &text,
                "switchboard_closes_total",
                &[("code", "1000"), ("cause", "client_close")],
            ) == CONNECTIONS as f64
        },
    )
    .await;
}
