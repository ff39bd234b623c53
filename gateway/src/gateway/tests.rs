use std::sync::Arc;

use switchboard_config::GatewayConfig;

use super::Gateway;
use crate::rooms::bus::memory::MemoryBus;

fn config(routes: &str) -> GatewayConfig {
    GatewayConfig::from_yaml(&format!(
        "apiVersion: switchboard.dev/v1alpha1\nkind: GatewayConfig\nlisteners: [{{name: public, address: '127.0.0.1:0'}}]\nadmin: {{address: '127.0.0.1:0'}}\nroutes: {routes}\n"
    ))
    .unwrap()
}

/// A Kubernetes-fed gateway starts with no routes and unloaded; its first snapshot's JWKS
/// must still be fetched before it is ready (the keys' latch once set every such pod ready
/// without keys, every JWT route answering 401 during a rollout).
#[tokio::test]
async fn a_snapshot_fed_gateway_is_not_ready_before_the_keys_of_its_first_snapshot() {
    let gw = Gateway::new(config("[]"), Arc::new(MemoryBus::new())).unwrap();
    gw.set_loaded(false);
    assert!(!gw.ready(), "nothing loaded yet");
    let with_jwks = config(
        "[{name: r, path: {value: /r}, proxy: {backends: []}, jwt: {keys: [{jwks: {url: 'http://127.0.0.1:9/jwks.json'}}]}}]",
    );
    gw.apply(with_jwks).unwrap();
    gw.set_loaded(true);
    assert!(!gw.ready(), "ready before the first snapshot's keys came");
}
