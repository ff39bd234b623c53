//! RFC 6455 and RFC 7692 conformance with Autobahn|Testsuite's fuzzingclient: once against the
//! echo upstream alone (the baseline: the app is conformant; it has no permessage-deflate, so the
//! compression cases 12.* and 13.* are excluded there) and once through the gateway's proxy
//! tunnel with the route's compression on (every message compressed: threshold 0), all cases
//! including 12.* and 13.*: the gateway terminates permessage-deflate at the edge and the app
//! sees plain frames. Zero FAILED and zero UNIMPLEMENTED cases.
//!
//! Needs `wstest` from `scripts/setup.sh` (`.venv-autobahn/`), or `SWITCHBOARD_WSTEST`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use serde_json::json;
use support::autobahn::{run_fuzzingclient, run_fuzzingclient_all};
use support::{ConfigBuilder, EchoServer, Gateway, MAX_MESSAGE_BYTES, http_get, route};

/// [`support::proxy_config`]'s Autobahn-sized route, with permessage-deflate on for every
/// message.
fn compressing_proxy_config(app: u16) -> String {
    ConfigBuilder::new()
        .route(
            route("echo", "/")
                .prefix()
                .proxy(&[app])
                .max_message_bytes(MAX_MESSAGE_BYTES)
                .messages_per_second(100_000, 100_000)
                .compression(json!({"enabled": true, "thresholdBytes": 0})),
        )
        .yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_fuzzingclient_against_the_echo_app_alone_has_no_failed_cases() {
    let echo = EchoServer::start().await;
    let report = run_fuzzingclient(&format!("ws://{}", echo.addr())).await;
    report.assert_conformant("echo app alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_fuzzingclient_through_the_compressing_proxy_tunnel_has_no_failed_or_unimplemented_cases()
 {
    let echo = EchoServer::start().await;
    let mut gateway = Gateway::start(&compressing_proxy_config(echo.port())).await;

    let report = run_fuzzingclient_all(&gateway.ws_url("")).await;
    report.assert_all_implemented("through the gateway's tunnel with permessage-deflate");

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
