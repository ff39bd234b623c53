//! Hot reload of the real binary (the config file is polled every 200ms here): a good reload
//! takes effect without dropping a live connection; a bad one (invalid YAML, an invalid field)
//! keeps the last good config serving and is counted as
//! `switchboard_config_reloads_total{result="error"}`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use support::{ConfigBuilder, route};
use support::{
    EchoServer, Gateway, PROMPTLY, assert_echo, close_normally, eventually, http_get, metric_sum,
    metrics_text, raw_upgrade, write_atomically, ws_connect,
};

const FAST_RELOAD: &[(&str, &str)] = &[("SWITCHBOARD_RELOAD_INTERVAL", "200ms")];

/// One route per name, `/<name>` to `backend`.
fn config(backend: u16, routes: &[&str]) -> ConfigBuilder {
    routes.iter().fold(ConfigBuilder::new(), |config, name| {
        config.route(route(name, &format!("/{name}")).proxy(&[backend]))
    })
}

async fn reloads(gateway: &Gateway, result: &str) -> f64 {
    let text = metrics_text(gateway).await;
    metric_sum(
        &text,
        "switchboard_config_reloads_total",
        &[("result", result)],
    )
}

async fn wait_reloads(gateway: &Gateway, result: &str, n: f64) {
    let what = format!("{n} reload(s) with result={result}");
    eventually(&what, PROMPTLY, || async {
        reloads(gateway, result).await >= n
    })
    .await;
}

async fn status_of(gateway: &Gateway, path: &str) -> u16 {
    let (resp, ws) = raw_upgrade(gateway.addr(), path, &[]).await;
    if let Some(mut ws) = ws {
        assert_echo(&mut ws, "probe").await;
        close_normally(&mut ws).await;
    }
    resp.status
}

#[tokio::test]
async fn a_good_reload_adds_a_route_without_dropping_a_live_connection() {
    let echo = EchoServer::start().await;
    let gateway = Gateway::start_with_env(&config(echo.port(), &["a"]).yaml(), FAST_RELOAD).await;
    let mut live = ws_connect(&gateway.ws_url("/a")).await;
    assert_echo(&mut live, "before").await;
    assert_eq!(status_of(&gateway, "/b").await, 404);

    write_atomically(
        &gateway.config_path(),
        &config(echo.port(), &["a", "b"]).yaml(),
    );
    wait_reloads(&gateway, "ok", 1.0).await;

    assert_eq!(status_of(&gateway, "/b").await, 101, "the new route serves");
    assert_eq!(
        status_of(&gateway, "/a").await,
        101,
        "the old route still serves"
    );
    assert_echo(&mut live, "after").await;
    assert_eq!(reloads(&gateway, "error").await, 0.0);
    assert!(
        echo.closes()
            .iter()
            .all(|c| c.as_ref().map(|c| c.0) == Some(1000))
    );
    close_normally(&mut live).await;
}

#[tokio::test]
async fn a_bad_reload_keeps_the_last_good_config_serving_and_is_counted() {
    let echo = EchoServer::start().await;
    let good = config(echo.port(), &["a"]).yaml();
    let gateway = Gateway::start_with_env(&good, FAST_RELOAD).await;
    let mut live = ws_connect(&gateway.ws_url("/a")).await;
    assert_echo(&mut live, "before").await;

    // Not YAML at all.
    write_atomically(&gateway.config_path(), "routes: [unclosed\n  - {");
    wait_reloads(&gateway, "error", 1.0).await;
    assert_eq!(status_of(&gateway, "/a").await, 101);
    assert_echo(&mut live, "after invalid YAML").await;

    // Valid YAML, invalid document: a new route with a field that fails validation.
    let invalid_field = config(echo.port(), &["a"])
        .route(route("b", "/b").proxy(&[echo.port()]).max_message_bytes(0))
        .yaml();
    write_atomically(&gateway.config_path(), &invalid_field);
    wait_reloads(&gateway, "error", 2.0).await;
    assert_eq!(
        status_of(&gateway, "/a").await,
        101,
        "the last good config serves"
    );
    assert_eq!(
        status_of(&gateway, "/b").await,
        404,
        "nothing of the bad one applied"
    );
    assert_echo(&mut live, "after an invalid field").await;

    assert_eq!(reloads(&gateway, "ok").await, 0.0);
    let (status, _) = http_get(gateway.admin(), "/readyz").await;
    assert_eq!(status, 200);
    // The counter moves just before the log line is written.
    eventually(
        "the refused reload's log line naming the bad field (maxMessageBytes)",
        PROMPTLY,
        || async { gateway.log().contains("maxMessageBytes") },
    )
    .await;
    close_normally(&mut live).await;
}

/// Readiness waits for every JWKS at start-up (a pod is not sent traffic its tokens would
/// fail), but once the pod has been ready, a reload that adds a JWKS URL that cannot be
/// fetched (a typo, an identity provider down) does not take the whole pod out of its load
/// balancer: every replica gets the same config, so every route of every pod went down. The
/// new route answers 401 `unknown signing key` until its keys come.
#[tokio::test]
async fn a_reload_adding_an_unreachable_jwks_keeps_a_ready_pod_ready() {
    let echo = EchoServer::start().await;
    let gateway = Gateway::start_with_env(&config(echo.port(), &["a"]).yaml(), FAST_RELOAD).await;
    let (status, _) = http_get(gateway.admin(), "/readyz").await;
    assert_eq!(status, 200);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", dead.local_addr().unwrap());
    drop(dead);
    let jwks = serde_json::json!({"keys": [{"jwks": {"url": url, "minRefresh": "1s"}}]});
    let with_jwks = config(echo.port(), &["a"])
        .route(route("b", "/b").jwt(jwks).proxy(&[echo.port()]))
        .yaml();
    write_atomically(&gateway.config_path(), &with_jwks);
    wait_reloads(&gateway, "ok", 1.0).await;
    // Give the failed fetches time to show.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (status, body) = http_get(gateway.admin(), "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(status_of(&gateway, "/a").await, 101);
    assert_eq!(status_of(&gateway, "/b").await, 401);
}
