//! Graceful drain of the real binary on SIGTERM: readiness fails at once, the listener keeps
//! accepting during `drain.propagation`, then every client (and the app behind it) gets the
//! route's Close code and reason, spread over the route's drain window, and the process exits 0
//! before `drain.deadline`. Upgrades after the propagation window are refused with 503 (or find
//! the listener gone once the process has exited).

mod support;

use std::time::Instant;

use support::{
    EchoServer, Gateway, PROMPTLY, assert_echo, eventually, expect_close, free_port, http_get,
    raw_exchange, try_http_get, upgrade_head, ws_connect,
};
use tokio::sync::mpsc;

const CLIENTS: usize = 8;

fn config(public: u16, admin: u16, backend: u16) -> String {
    format!(
        r#"apiVersion: switchboard.dev/v1alpha1
kind: GatewayConfig
listeners: [{{name: public, address: "127.0.0.1:{public}"}}]
admin: {{address: "127.0.0.1:{admin}"}}
drain: {{propagation: 2s, deadline: 10s}}
routes:
  - name: drained
    path: {{value: /}}
    proxy: {{backends: [{{address: "127.0.0.1:{backend}"}}]}}
    keepalive: {{interval: 0s}}
    drain: {{window: 1s, closeCode: 1012, closeReason: restart}}
"#
    )
}

#[tokio::test]
async fn sigterm_drains_every_client_with_the_routes_close_code_and_exits_zero() {
    let echo = EchoServer::start().await;
    let mut gateway = Gateway::start(&config(free_port(), free_port(), echo.port())).await;

    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut ws = ws_connect(&gateway.ws_url(&format!("/client/{i}"))).await;
        assert_echo(&mut ws, "before the drain").await;
        clients.push(ws);
    }

    gateway.terminate();
    eventually("/readyz to fail after SIGTERM", PROMPTLY, || async {
        matches!(
            try_http_get(gateway.admin(), "/readyz", &[]).await,
            Ok((503, _))
        )
    })
    .await;
    let (_, body) = http_get(gateway.admin(), "/readyz").await;
    assert_eq!(body.trim(), "draining");

    // Still inside the propagation window: the listener accepts and proxies a new client.
    let mut late = ws_connect(&gateway.ws_url("/client/late")).await;
    assert_echo(&mut late, "during propagation").await;
    clients.push(late);

    // Every client sees the route's Close, then the end of its stream.
    let (first_tx, mut first_rx) = mpsc::channel::<()>(CLIENTS + 1);
    let mut waits = Vec::new();
    for mut ws in clients {
        let first_tx = first_tx.clone();
        waits.push(tokio::spawn(async move {
            let (code, reason, _) = expect_close(&mut ws, PROMPTLY).await;
            let _ = first_tx.try_send(());
            (code, reason, Instant::now())
        }));
    }
    first_rx.recv().await.expect("a first close");
    // The propagation window is over: a new upgrade is refused (or, if the drain already
    // finished, the process is gone).
    let after = match raw_exchange(gateway.addr(), &upgrade_head("/client/too-late", &[])).await {
        Ok((resp, _, _)) => {
            assert_eq!(resp.status, 503, "{resp:?}");
            assert!(resp.header("retry-after").is_some(), "{resp:?}");
            format!("{} {}", resp.status, resp.body_text().trim())
        }
        Err(e) => format!("connection failed ({e}): the gateway had exited"),
    };
    println!("upgrade after the propagation window: {after}");

    let mut at = Vec::new();
    for wait in waits {
        let (code, reason, when) = wait.await.expect("client task");
        assert_eq!((code, reason.as_str()), (1012, "restart"));
        at.push(when);
    }
    let first = *at.iter().min().expect("closes");
    let spread: Vec<u128> = at
        .iter()
        .map(|t| t.duration_since(first).as_millis())
        .collect();
    println!("close arrival offsets (ms, drain window 1s): {spread:?}");

    let app = echo.wait_closes(CLIENTS + 1, PROMPTLY).await;
    assert!(
        app.iter()
            .all(|c| c.as_ref().map(|(code, r)| (*code, r.as_str())) == Some((1012, "restart"))),
        "the app got the same close: {app:?}"
    );

    let status = gateway
        .wait_exit(PROMPTLY)
        .await
        .expect("the gateway exits after the drain");
    assert!(status.success(), "exit status {status}");
    let log = gateway.log();
    assert!(
        log.contains("drain complete: graceful exit"),
        "exited before the deadline, not forced; log:\n{log}"
    );
}
