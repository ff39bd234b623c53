//! Pinning through the real binary: a key (JWT claim or header) always lands on the same
//! backend pod, different keys spread over the pods, and marking one pod `draining` by a config
//! reload moves only that pod's keys while its open connections stay up.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they assert

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use support::{ConfigBuilder, route};
use support::{
    EchoServer, Gateway, PROMPTLY, assert_echo, claims, close_normally, eventually, jwt_hs256,
    metric_sum, metrics_text, next_text, sign_hs256, write_atomically, ws_request,
};

/// How often reconnecting keys are tried, and how many distinct keys are spread.
const RECONNECTS: usize = 20;
const KEYS: usize = 60;

fn config(backends: &[(u16, bool)]) -> String {
    let backends: Vec<_> = backends
        .iter()
        .map(|(p, draining)| json!({"address": format!("127.0.0.1:{p}"), "draining": draining}))
        .collect();
    ConfigBuilder::new()
        .route(route("by-claim", "/claim").jwt(jwt_hs256()).set(
            "proxy",
            json!({"backends": backends, "pinning": {"claim": "sub"}}),
        ))
        .route(route("by-header", "/header").set(
            "proxy",
            json!({"backends": backends, "pinning": {"header": "X-Room"}}),
        ))
        .yaml()
}

async fn three_backends() -> [EchoServer; 3] {
    [
        EchoServer::announcing().await,
        EchoServer::announcing().await,
        EchoServer::announcing().await,
    ]
}

/// Connect with these headers, read the backend's announcement, close cleanly.
async fn landing(gateway: &Gateway, path: &str, headers: &[(&str, &str)]) -> String {
    let mut ws = ws_connect_with(gateway, path, headers).await;
    let label = next_text(&mut ws, PROMPTLY).await;
    close_normally(&mut ws).await;
    label
}

async fn ws_connect_with(
    gateway: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
) -> support::WsClient {
    support::ws_try_connect(ws_request(&gateway.ws_url(path), headers))
        .await
        .unwrap_or_else(|e| panic!("connect {path} with {headers:?}: {e}"))
}

/// Where a connection carrying `token` (as a bearer token) lands.
async fn claim_landing(gateway: &Gateway, token: &str) -> String {
    let bearer = format!("Bearer {token}");
    landing(gateway, "/claim", &[("Authorization", &bearer)]).await
}

/// An HS256 token for `sub`, valid for 10 minutes.
fn hs_token(sub: &str) -> String {
    sign_hs256(&claims(sub, 600, serde_json::json!({})))
}

/// One token per sub.
fn tokens(subs: &[String]) -> BTreeMap<String, String> {
    subs.iter().map(|s| (s.clone(), hs_token(s))).collect()
}

#[tokio::test]
async fn the_same_claim_reconnecting_lands_on_the_same_backend_and_different_claims_spread() {
    let echoes = three_backends().await;
    let backends: Vec<(u16, bool)> = echoes.iter().map(|e| (e.port(), false)).collect();
    let gateway = Gateway::start(&config(&backends)).await;

    let alice = hs_token("alice");
    let first = claim_landing(&gateway, &alice).await;
    for attempt in 1..RECONNECTS {
        assert_eq!(
            claim_landing(&gateway, &alice).await,
            first,
            "reconnect {attempt} of sub=alice moved"
        );
    }

    let subs: Vec<String> = (0..KEYS).map(|i| format!("user-{i}")).collect();
    let mut spread = BTreeMap::<String, usize>::new();
    for token in tokens(&subs).values() {
        *spread
            .entry(claim_landing(&gateway, token).await)
            .or_default() += 1;
    }
    let all: BTreeSet<String> = echoes.iter().map(EchoServer::label).collect();
    assert_eq!(
        spread.keys().cloned().collect::<BTreeSet<_>>(),
        all,
        "{KEYS} subs spread over every backend: {spread:?}"
    );
}

#[tokio::test]
async fn the_same_header_value_reconnecting_lands_on_the_same_backend_and_values_spread() {
    let echoes = three_backends().await;
    let backends: Vec<(u16, bool)> = echoes.iter().map(|e| (e.port(), false)).collect();
    let gateway = Gateway::start(&config(&backends)).await;

    let first = landing(&gateway, "/header", &[("X-Room", "lobby")]).await;
    for attempt in 1..RECONNECTS {
        assert_eq!(
            landing(&gateway, "/header", &[("X-Room", "lobby")]).await,
            first,
            "reconnect {attempt} of X-Room: lobby moved"
        );
    }

    let mut spread = BTreeSet::new();
    for i in 0..KEYS {
        spread.insert(landing(&gateway, "/header", &[("X-Room", &format!("room-{i}"))]).await);
    }
    assert_eq!(
        spread.len(),
        3,
        "{KEYS} rooms spread over every backend: {spread:?}"
    );
}

#[tokio::test]
async fn draining_a_backend_by_reload_moves_only_its_keys_and_keeps_its_open_connections() {
    let echoes = three_backends().await;
    let ports: Vec<u16> = echoes.iter().map(EchoServer::port).collect();
    let all_ready: Vec<(u16, bool)> = ports.iter().map(|p| (*p, false)).collect();
    let gateway = Gateway::start_with_env(
        &config(&all_ready),
        &[("SWITCHBOARD_RELOAD_INTERVAL", "200ms")],
    )
    .await;

    let subs: Vec<String> = (0..KEYS).map(|i| format!("user-{i}")).collect();
    let tokens = tokens(&subs);
    let mut before = BTreeMap::new();
    for sub in &subs {
        before.insert(sub.clone(), claim_landing(&gateway, &tokens[sub]).await);
    }
    // Drain the pod that owns user-0; keep a connection to it open across the reload.
    let drained = before["user-0"].clone();
    let mut pinned = ws_connect_with(
        &gateway,
        "/claim",
        &[("Authorization", &format!("Bearer {}", tokens["user-0"]))],
    )
    .await;
    assert_eq!(next_text(&mut pinned, PROMPTLY).await, drained);
    assert_echo(&mut pinned, "before the reload").await;

    let marked: Vec<(u16, bool)> = echoes
        .iter()
        .map(|e| (e.port(), e.label() == drained))
        .collect();
    write_atomically(&gateway.config_path(), &config(&marked));
    eventually("the draining reload to be applied", PROMPTLY, || async {
        let text = metrics_text(&gateway).await;
        metric_sum(
            &text,
            "switchboard_config_reloads_total",
            &[("result", "ok")],
        ) >= 1.0
    })
    .await;

    let mut moved = 0;
    for sub in &subs {
        let now = claim_landing(&gateway, &tokens[sub]).await;
        if before[sub] == drained {
            assert_ne!(now, drained, "{sub} still lands on the draining backend");
            moved += 1;
        } else {
            assert_eq!(
                now, before[sub],
                "{sub} moved although its backend is not draining"
            );
        }
    }
    assert!(moved >= 1, "user-0's key moved");

    // The connection opened before the reload is still on the draining pod and working.
    assert_echo(&mut pinned, "after the reload").await;
    let drained_echo = echoes
        .iter()
        .find(|e| e.label() == drained)
        .expect("drained backend");
    eventually(
        "only the old connection to stay on the draining backend",
        PROMPTLY,
        || async { drained_echo.open_connections() == 1 },
    )
    .await;
    let seen = drained_echo.closes().len();
    close_normally(&mut pinned).await;
    let closes = drained_echo.wait_closes(seen + 1, PROMPTLY).await;
    assert_eq!(closes[seen].as_ref().map(|c| c.0), Some(1000));
}
