//! RFC 6455 conformance with Autobahn|Testsuite's fuzzingclient: once against the echo upstream
//! alone (the baseline: the app is conformant) and once through the gateway's proxy tunnel
//! (the tunnel keeps it so). Compression cases (12.*, 13.*) are excluded: permessage-deflate is
//! not negotiated through the tunnel yet.
//!
//! Needs `wstest` from `scripts/setup.sh` (`.venv-autobahn/`), or `SWITCHBOARD_WSTEST`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use support::autobahn::run_fuzzingclient;
use support::{EchoServer, Gateway, http_get, proxy_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_fuzzingclient_against_the_echo_app_alone_has_no_failed_cases() {
    let echo = EchoServer::start().await;
    let report = run_fuzzingclient(&format!("ws://{}", echo.addr())).await;
    report.assert_conformant("echo app alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_fuzzingclient_through_the_proxy_tunnel_has_no_failed_cases() {
    let echo = EchoServer::start().await;
    let mut gateway = Gateway::start(&proxy_config(&[echo.port()])).await;

    let report = run_fuzzingclient(&gateway.ws_url("")).await;
    report.assert_conformant("through the gateway");

    assert!(
        gateway.is_running(),
        "the gateway exited during the Autobahn run; log tail:\n{}",
        gateway.log_tail(60)
    );
    let (status, body) = http_get(gateway.admin(), "/readyz").await;
    assert_eq!(
        status, 200,
        "/readyz after the Autobahn run: {status} {body}"
    );
    assert!(
        echo.connections() >= report.cases.len(),
        "every case reached the backend ({} connections for {} cases)",
        echo.connections(),
        report.cases.len()
    );
}
