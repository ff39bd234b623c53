//! One broken route never blocks the others (real binary, config file polled every 200ms).
//!
//! Two routes, `good` (no auth) and `keyed` (JWT, RS256 key from a file). A key file holding a
//! truncated PEM keeps only `keyed` out: the gateway starts and serves `good`, `keyed` answers
//! `503 route_not_programmed`, and `/status` `routeFailures`, the
//! `switchboard_route_compile_failures` gauge and an ERROR line say why. Fixing the file
//! programs `keyed`; breaking it again keeps its last good version serving, while edits of
//! `good` keep applying and a connection on `good` stays open throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::path::Path;

use serde_json::Value;
use serde_json::json;
use support::{ConfigBuilder, route};
use support::{
    EchoServer, Gateway, PROMPTLY, RawResponse, assert_echo, close_normally, eventually, fixture,
    http_get, metric_sum, metrics_text, raw_upgrade, token_for, write_atomically, ws_connect,
};

const FAST_RELOAD: &[(&str, &str)] = &[("SWITCHBOARD_RELOAD_INTERVAL", "200ms")];

/// `good` at `good_path` (no auth) and `keyed` at `/keyed` (RS256 key from `key_file`).
fn config(backend: u16, good_path: &str, key_file: &Path) -> String {
    ConfigBuilder::new()
        .route(route("good", good_path).proxy(&[backend]))
        .route(
            route("keyed", "/keyed")
                .jwt(json!({"keys": [{"file": {"algorithm": "RS256", "path": key_file.display().to_string()}}]}))
                .proxy(&[backend]),
        )
        .yaml()
}

fn good_pem() -> String {
    std::fs::read_to_string(fixture("keys/rsa.pub.pem")).expect("fixture public key")
}

/// The fixture public key with its second half cut off.
fn truncated_pem() -> String {
    good_pem()
        .lines()
        .take(3)
        .map(|l| format!("{l}\n"))
        .collect()
}

async fn upgrade(gateway: &Gateway, path: &str, token: Option<&str>) -> RawResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let (resp, ws) = raw_upgrade(gateway.addr(), path, &headers).await;
    if let Some(mut ws) = ws {
        assert_echo(&mut ws, "probe").await;
        close_normally(&mut ws).await;
    }
    resp
}

async fn status(gateway: &Gateway) -> Value {
    let (code, body) = http_get(gateway.admin(), "/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("/status is JSON")
}

async fn failures(gateway: &Gateway) -> Vec<Value> {
    status(gateway).await["routeFailures"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn failure_gauge(gateway: &Gateway, serving: &str) -> f64 {
    metric_sum(
        &metrics_text(gateway).await,
        "switchboard_route_compile_failures",
        &[("route", "keyed"), ("serving", serving)],
    )
}

#[tokio::test]
async fn a_broken_key_file_keeps_only_its_route_out_and_reloads_fix_or_break_it_alone() {
    let echo = EchoServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("keyed.pub.pem");
    std::fs::write(&key, truncated_pem()).expect("write the broken key");
    let token = token_for("alice");

    // --- Start with the broken key: the gateway serves `good`, `keyed` is reported. ---------
    let gateway = Gateway::start_with_env(&config(echo.port(), "/good", &key), FAST_RELOAD).await;
    let mut live = ws_connect(&gateway.ws_url("/good")).await;
    assert_echo(&mut live, "good serves next to a broken route").await;
    let refused = upgrade(&gateway, "/keyed", Some(&token)).await;
    let body = String::from_utf8_lossy(&refused.body);
    assert_eq!(refused.status, 503, "{body}");
    assert!(body.contains("route_not_programmed"), "{body}");
    let listed = failures(&gateway).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["route"], "keyed");
    assert_eq!(listed[0]["serving"], "none");
    let problem = listed[0]["problems"][0].as_str().unwrap_or_default();
    assert!(
        problem.starts_with("routes[1].jwt.keys[0]:")
            && problem.contains("the PEM is not a public key usable with RS256"),
        "{problem}"
    );
    assert_eq!(failure_gauge(&gateway, "none").await, 1.0);
    assert!(
        gateway.log().contains("route not compiled"),
        "{}",
        gateway.log_tail(20)
    );

    // --- Fix the key file: `keyed` is programmed, nothing is reported any more. -------------
    write_atomically(&key, &good_pem());
    eventually("keyed serves once its key is fixed", PROMPTLY, || async {
        upgrade(&gateway, "/keyed", Some(&token)).await.status == 101
    })
    .await;
    assert_eq!(failures(&gateway).await, Vec::<Value>::new());
    assert_eq!(failure_gauge(&gateway, "none").await, 0.0);

    // --- Break it again and edit `good` in the same reload. ---------------------------------
    write_atomically(&key, &truncated_pem());
    write_atomically(
        &gateway.config_path(),
        &config(echo.port(), "/good-v2", &key),
    );
    eventually("the edit of good applies", PROMPTLY, || async {
        upgrade(&gateway, "/good-v2", None).await.status == 101
    })
    .await;
    let listed = failures(&gateway).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["serving"]["lastGood"]["generation"], 0);
    assert_eq!(
        upgrade(&gateway, "/keyed", Some(&token)).await.status,
        101,
        "the last good version of keyed keeps serving"
    );
    assert_eq!(
        upgrade(&gateway, "/keyed", None).await.status,
        401,
        "with its auth"
    );
    assert_eq!(failure_gauge(&gateway, "last_good").await, 1.0);
    assert_eq!(upgrade(&gateway, "/good", None).await.status, 404);

    assert_echo(&mut live, "the live connection never noticed").await;
    let (ready, _) = http_get(gateway.admin(), "/readyz").await;
    assert_eq!(ready, 200);
    close_normally(&mut live).await;
}

#[tokio::test]
async fn check_mode_still_refuses_a_config_with_a_route_that_does_not_compile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("keyed.pub.pem");
    std::fs::write(&key, truncated_pem()).expect("write the broken key");
    let (status, out) = support::check_config(&config(1, "/good", &key));
    assert_eq!(status.code(), Some(64), "{out}");
    assert!(
        out.contains("routes[1].jwt.keys[0]") && out.contains("not a public key usable with RS256"),
        "{out}"
    );
    std::fs::write(&key, good_pem()).expect("write the good key");
    let (status, out) = support::check_config(&config(1, "/good", &key));
    assert!(status.success(), "{out}");
}
